package issuer_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
)

// revokedWeb is a deny-list revoking webID.
type revokedWeb struct{}

func (revokedWeb) Revoked(id string) (store.Revocation, bool) { return store.Revocation{}, id == webID }
func (revokedWeb) Stale(time.Time) bool                       { return false }

// Each refused request is counted under its bounded reason: attestation
// failures by the reason the attestor marked (an error outside its
// contract is "other"), denials as revoked, policy or names.
func TestMetricsCountRefusals(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	attestor := &fakeAttestor{identities: map[string]attest.Identity{
		goodToken: {Cluster: "dev", Namespace: "default", ServiceAccount: "web"},
		"bad-ns":  {Cluster: "dev", Namespace: "Not A Label!", ServiceAccount: "web"},
		"db":      {Cluster: "dev", Namespace: "default", ServiceAccount: "db"},
	}}
	reg := prometheus.NewPedanticRegistry()
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: attestor, Recorder: &fakeRecorder{}, DenyList: revokedWeb{}, Metrics: reg,
		Now: func() time.Time { return t0.Add(time.Minute) },
	})
	if err != nil {
		t.Fatal(err)
	}
	csr := csrPEM(t, newKey(t), &x509.CertificateRequest{})
	for _, c := range []struct {
		token string
		err   error
	}{
		{"x", errors.Join(attest.ErrUnauthenticated, attest.ErrNotAllowed)},
		{"x", errors.Join(attest.ErrUnauthenticated, attest.ErrUnknownCluster)},
		{"x", errors.Join(attest.ErrUnavailable, errors.New("api server down"))},
		{"x", errors.New("attestor broke its contract")},
		{"x", errors.Join(attest.ErrUnauthenticated, errors.New("bad signature"))},
		{"bad-ns", nil},
		{goodToken, nil},
	} {
		attestor.err = c.err
		if _, err := iss.Issue(t.Context(), issuer.Request{Token: c.token, CSR: csr}); err == nil {
			t.Fatalf("token %q, attestor error %v: issued", c.token, c.err)
		}
	}
	attestor.err = nil
	dnsCSR := csrPEM(t, newKey(t), &x509.CertificateRequest{DNSNames: []string{"istiod.istio-system.svc"}})
	if _, err := iss.Issue(t.Context(), issuer.Request{Token: "db", CSR: dnsCSR}); err == nil {
		t.Fatal("a DNS name without a grant: issued")
	}
	want := `
# HELP meshca_issuer_attestation_failures_total Workload credentials that failed attestation, by cluster and reason ([invalid_token expired audience unknown_cluster not_allowed unavailable rate_limited other]).
# TYPE meshca_issuer_attestation_failures_total counter
meshca_issuer_attestation_failures_total{cluster="dev",reason="audience"} 0
meshca_issuer_attestation_failures_total{cluster="dev",reason="expired"} 0
meshca_issuer_attestation_failures_total{cluster="dev",reason="invalid_token"} 1
meshca_issuer_attestation_failures_total{cluster="dev",reason="not_allowed"} 1
meshca_issuer_attestation_failures_total{cluster="dev",reason="other"} 1
meshca_issuer_attestation_failures_total{cluster="dev",reason="rate_limited"} 0
meshca_issuer_attestation_failures_total{cluster="dev",reason="unavailable"} 1
meshca_issuer_attestation_failures_total{cluster="dev",reason="unknown_cluster"} 1
# HELP meshca_issuer_denied_total Certificate requests of attested workloads refused, by reason (revoked, policy, names).
# TYPE meshca_issuer_denied_total counter
meshca_issuer_denied_total{reason="names"} 1
meshca_issuer_denied_total{reason="policy"} 1
meshca_issuer_denied_total{reason="revoked"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), issuer.AttestationFailuresMetric, issuer.DeniedMetric); err != nil {
		t.Fatal(err)
	}
}

// Two issuers registering with one registry (meshca dev runs components
// side by side) share the collectors instead of failing.
func TestMetricsShareARegistry(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	reg := prometheus.NewRegistry()
	for range 2 {
		if _, err := issuer.New(issuer.Config{
			TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
			Attestor: &fakeAttestor{}, Recorder: &fakeRecorder{}, Metrics: reg, Now: func() time.Time { return t0 },
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := testutil.GatherAndCount(reg, issuer.RequestsMetric); err != nil || n != 17 {
		t.Fatalf("%s series = %d, %v; want the 17 codes exported once", issuer.RequestsMetric, n, err)
	}
}

// Attestation failures are counted under the cluster a request names when
// the issuer attests it, and under the issuer's own cluster otherwise: a
// caller cannot add label values.
func TestMetricsClusterLabel(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	reg := prometheus.NewPedanticRegistry()
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "east", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{}, Recorder: &fakeRecorder{}, Metrics: reg, MetricsClusters: []string{"west"},
		Now: func() time.Time { return t0.Add(time.Minute) },
	})
	if err != nil {
		t.Fatal(err)
	}
	csr := csrPEM(t, newKey(t), &x509.CertificateRequest{})
	for _, cluster := range []string{"west", "made-up", ""} {
		if _, err := iss.Issue(t.Context(), issuer.Request{Token: "x", ClusterID: cluster, CSR: csr}); err == nil {
			t.Fatal("issued to an unknown token")
		}
	}
	for cluster, want := range map[string]float64{"east": 2, "west": 1} {
		got := testutil.ToFloat64(counterOf(t, reg, issuer.AttestationFailuresMetric, cluster, issuer.AttestInvalidToken))
		if got != want {
			t.Errorf("failures{cluster=%q} = %v, want %v", cluster, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, issuer.AttestationFailuresMetric); err != nil || n != 16 {
		t.Errorf("failure series = %d, %v; want 8 reasons for each of 2 clusters", n, err)
	}
}

// counterOf is the series of the counter name with labels cluster and
// reason, re-exported as a collector for testutil.ToFloat64.
func counterOf(t *testing.T, reg prometheus.Gatherer, name, cluster, reason string) prometheus.Collector {
	t.Helper()
	m := testkit.Series(t, reg, name, "cluster", cluster, "reason", reason)
	if m == nil {
		t.Fatalf("%s{cluster=%q,reason=%q} not exported", name, cluster, reason)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "copy", Help: "copy"})
	c.Add(testkit.Value(m))
	return c
}
