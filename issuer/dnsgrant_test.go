package issuer_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca/root/roottest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
)

const (
	istiodToken       = "istiod-token"
	istiodRemoteToken = "istiod-west-token"
	istiodID          = "spiffe://cluster.local/ns/istio-system/sa/istiod"
)

var istiodNames = []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}

// newDNSFixture is an issuer of cluster "dev" that grants istiod (attested
// in "dev") grant, under an intermediate admitting workloadDNS exactly.
func newDNSFixture(t *testing.T, grant, workloadDNS []string) *fixture {
	t.Helper()
	f := &fixture{tree: testkit.New(t, testkit.Options{Now: t0, WorkloadDNSNames: workloadDNS}), rec: &fakeRecorder{}, now: t0.Add(time.Minute)}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: f.tree.TrustDomain, Cluster: "dev",
		Authority: f.tree.Intermediate, Bundle: f.tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{
			goodToken:         {Cluster: "dev", Namespace: "default", ServiceAccount: "web"},
			istiodToken:       {Cluster: "dev", Namespace: "istio-system", ServiceAccount: "istiod"},
			istiodRemoteToken: {Cluster: "west", Namespace: "istio-system", ServiceAccount: "istiod"},
		}},
		Recorder:  f.rec,
		DNSGrants: []issuer.DNSGrant{{SPIFFEID: spiffeid.RequireFromString(istiodID), DNSNames: grant}},
		Now:       func() time.Time { return f.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.iss = iss
	return f
}

func TestDNSGrantIssuesTheNames(t *testing.T) {
	f := newDNSFixture(t, istiodNames, istiodNames)
	for _, asked := range [][]string{istiodNames, istiodNames[1:]} {
		chain, err := f.iss.Issue(context.Background(), issuer.Request{Token: istiodToken,
			CSR: csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{DNSNames: asked})})
		if err != nil {
			t.Fatalf("DNS names %q: %v", asked, err)
		}
		leaf := chain[0]
		if !slices.Equal(leaf.DNSNames, asked) || len(leaf.URIs) != 1 || leaf.URIs[0].String() != istiodID {
			t.Fatalf("leaf names DNS %q URIs %v, want %q and %s", leaf.DNSNames, leaf.URIs, asked, istiodID)
		}
		inters := x509.NewCertPool()
		inters.AddCert(chain[1])
		for _, n := range asked {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: f.tree.Bundle.Pool(), Intermediates: inters,
				CurrentTime: f.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("leaf does not verify for %s: %v", n, err)
			}
		}
	}
	if n := f.rec.count(); n != 2 {
		t.Fatalf("recorded %d certificates, want 2", n)
	}
	if d := f.rec.events[0].Detail; !strings.Contains(d, "dns=istiod.istio-system.svc,istiod.istio-system.svc.cluster.local") {
		t.Errorf("audit detail %q does not name the DNS names", d)
	}
	// Without DNS names in its CSR istiod gets an ordinary workload certificate.
	chain, err := f.iss.Issue(context.Background(), issuer.Request{Token: istiodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil || len(chain[0].DNSNames) != 0 {
		t.Fatalf("plain request: err %v, DNS names %v", err, chain[0].DNSNames)
	}
}

// Attacks on the exception: nothing is issued or recorded for any of them.
func TestDNSGrantRefusals(t *testing.T) {
	f := newDNSFixture(t, istiodNames, istiodNames)
	p256 := testKey(t, "p256")
	dns := func(names ...string) []byte {
		return csrPEM(t, p256, &x509.CertificateRequest{DNSNames: names})
	}
	for _, tc := range []struct {
		name    string
		token   string
		csr     []byte
		want    error
		message string
	}{
		{"other identity asks for istiod's name", goodToken, dns("istiod.istio-system.svc"), issuer.ErrPermissionDenied, "may not have DNS names"},
		{"istiod of another cluster", istiodRemoteToken, dns("istiod.istio-system.svc"), issuer.ErrPermissionDenied, "may not have DNS names"},
		{"unlisted name", istiodToken, dns("istiod.istio-system.svc", "kubernetes.default.svc"), issuer.ErrPermissionDenied, `"kubernetes.default.svc"`},
		{"subdomain of a listed name", istiodToken, dns("x.istiod.istio-system.svc"), issuer.ErrPermissionDenied, "may not have DNS name"},
		{"wildcard", istiodToken, dns("*.istio-system.svc"), issuer.ErrPermissionDenied, "may not have DNS name"},
		{"upper case", istiodToken, dns("ISTIOD.istio-system.svc"), issuer.ErrPermissionDenied, "may not have DNS name"},
		{"repeated name", istiodToken, dns("istiod.istio-system.svc", "istiod.istio-system.svc"), issuer.ErrInvalidRequest, "twice"},
		{"more names than granted", istiodToken, dns(istiodNames[0], istiodNames[1], istiodNames[0]), issuer.ErrPermissionDenied, "that many"},
		{"IP SAN", istiodToken, csrPEM(t, p256, &x509.CertificateRequest{DNSNames: istiodNames[:1], IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), issuer.ErrInvalidRequest, "IP SANs"},
		{"email SAN", istiodToken, csrPEM(t, p256, &x509.CertificateRequest{DNSNames: istiodNames[:1], EmailAddresses: []string{"istiod@example.com"}}), issuer.ErrInvalidRequest, "email SANs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.rec.count()
			chain, err := f.iss.Issue(context.Background(), issuer.Request{Token: tc.token, CSR: tc.csr})
			if !errors.Is(err, tc.want) || chain != nil {
				t.Fatalf("err = %v, want %v and no chain", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("err %q does not say %q", err, tc.message)
			}
			if strings.Contains(err.Error(), "istiod.istio-system.svc.cluster.local") {
				t.Errorf("err %q discloses the granted names", err)
			}
			if f.rec.count() != before {
				t.Error("a refused request was recorded")
			}
		})
	}
}

// The issuer's configuration is not enough: the intermediate must admit
// the name too, else nothing is signed (a grant the root never agreed
// to, or an intermediate minted before the grant).
func TestDNSGrantNeedsTheIntermediate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		grant       []string
		workloadDNS []string
		ask         string
	}{
		{"intermediate lacks the name", istiodNames, nil, "istiod.istio-system.svc.cluster.local"},
		{"a serving name of the intermediate, not a workload name", istiodNames, nil, "istiod.istio-system.svc"},
		{"intermediate admits only the parent exactly", []string{"x.istiod.istio-system.svc"}, istiodNames[:1], "x.istiod.istio-system.svc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newDNSFixture(t, tc.grant, tc.workloadDNS)
			_, err := f.iss.Issue(context.Background(), issuer.Request{Token: istiodToken,
				CSR: csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{DNSNames: []string{tc.ask}})})
			if !errors.Is(err, issuer.ErrUnavailable) || !strings.Contains(err.Error(), "was not made for the granted DNS name") {
				t.Fatalf("err = %v, want Unavailable: the intermediate does not permit it", err)
			}
			if f.rec.count() != 0 {
				t.Error("a refused request was recorded")
			}
		})
	}
}

func TestDNSGrantsValidate(t *testing.T) {
	istiod := spiffeid.RequireFromString(istiodID)
	base := issuer.Config{Cluster: "dev", TrustDomain: istiod.TrustDomain()}
	for _, tc := range []struct {
		name   string
		grants []issuer.DNSGrant
		want   string
	}{
		{"no ID", []issuer.DNSGrant{{DNSNames: istiodNames}}, "SPIFFE ID is required"},
		{"other trust domain", []issuer.DNSGrant{{SPIFFEID: spiffeid.RequireFromString("spiffe://other.example/ns/istio-system/sa/istiod"), DNSNames: istiodNames}}, "not in the issuer's trust domain"},
		{"not a workload ID", []issuer.DNSGrant{{SPIFFEID: spiffeid.RequireFromString("spiffe://cluster.local/istiod"), DNSNames: istiodNames}}, "not a workload identity"},
		{"no names", []issuer.DNSGrant{{SPIFFEID: istiod}}, "no DNS names"},
		{"wildcard", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: []string{"*.istio-system.svc"}}}, "wildcards are not allowed"},
		{"upper case", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: []string{"Istiod.istio-system.svc"}}}, "not a lower-case DNS name"},
		{"IP address", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: []string{"10.0.0.1"}}}, "not a lower-case DNS name"},
		{"trailing dot", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: []string{"istiod.istio-system.svc."}}}, "not a lower-case DNS name"},
		{"duplicate name", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: []string{"istiod.istio-system.svc", "istiod.istio-system.svc"}}}, "granted twice"},
		{"name of two identities", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: istiodNames[:1]},
			{SPIFFEID: spiffeid.RequireFromString(webID), DNSNames: istiodNames[:1]}}, "granted twice"},
		{"two grants of one identity", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: istiodNames[:1]}, {SPIFFEID: istiod, DNSNames: istiodNames[1:]}}, "has another grant"},
		{"nested names", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: []string{"istiod.istio-system.svc", "x.istiod.istio-system.svc"}}}, "beneath"},
		{"too many names", []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: manyNames(issuer.MaxDNSNamesPerGrant + 1)}}, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := issuer.ValidateDNSGrants(tc.grants, base.TrustDomain); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	ok := []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: istiodNames}, {SPIFFEID: istiod, Cluster: "west", DNSNames: []string{"istiod-remote.istio-system.svc"}}}
	if err := issuer.ValidateDNSGrants(ok, base.TrustDomain); err != nil {
		t.Fatalf("valid grants refused: %v", err)
	}
	testkit.ValidateKeepsConfig(t, &issuer.Config{DNSGrants: []issuer.DNSGrant{{SPIFFEID: istiod, DNSNames: []string{"b.svc", "a.svc", "a.svc"}}}})
}

func manyNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "n" + strings.Repeat("x", i) + ".svc"
	}
	return out
}

// Under a central root the root decides: the cluster's record lists the
// workload DNS names, the intermediate the root signs admits them, and the
// issuer issues a granted name only when both agree.
func TestDNSGrantUnderCentralRoot(t *testing.T) {
	r := roottest.New(t)
	for _, tc := range []struct {
		cluster, td string
		record      []string
		ask         []string
		want        error
	}{
		{"east", "cluster.local", istiodNames, istiodNames, nil},
		// The issuer grants a name the root's record lacks.
		{"west", "cluster.local", istiodNames[:1], istiodNames[1:], issuer.ErrUnavailable},
		// The root's record has no names at all; istiod.istio-system.svc is
		// only one of the issuer's serving names, which does not count.
		{"north", "cluster.local", nil, istiodNames[:1], issuer.ErrUnavailable},
	} {
		t.Run(tc.cluster, func(t *testing.T) {
			up := mustUpstream(t, upstreamConfig(r, t.TempDir(), r.AddClusterDNS(tc.cluster, tc.td, tc.record...), nil))
			a, tb := mustIntermediate(t, up)
			rec := &fakeRecorder{}
			iss, err := issuer.New(issuer.Config{
				TrustDomain: up.TrustDomain(), Cluster: up.Cluster(), Authority: a, Bundle: tb.OwnRoots(),
				Attestor: &fakeAttestor{identities: map[string]attest.Identity{
					istiodToken: {Cluster: tc.cluster, Namespace: "istio-system", ServiceAccount: "istiod"},
				}},
				Recorder:  rec,
				DNSGrants: []issuer.DNSGrant{{SPIFFEID: spiffeid.RequireFromString(istiodID), DNSNames: istiodNames}},
				Now:       r.Clock.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			chain, err := iss.Issue(context.Background(), issuer.Request{Token: istiodToken,
				CSR: csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{DNSNames: tc.ask})})
			if tc.want != nil {
				if !errors.Is(err, tc.want) || rec.count() != 0 {
					t.Fatalf("err = %v (recorded %d), want %v and nothing recorded", err, rec.count(), tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			inters := x509.NewCertPool()
			inters.AddCert(chain[1])
			for _, n := range tc.ask {
				if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: n, Roots: r.Roots().Pool(), Intermediates: inters,
					CurrentTime: r.Clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					t.Errorf("leaf for %s under the central root: %v", n, err)
				}
			}
		})
	}
}

// An intermediate that does not admit a granted name is reported when the
// issuer takes it up, before any request fails.
func TestDNSGrantWarnsOfUnadmittedNames(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0, WorkloadDNSNames: istiodNames[:1]})
	log, logs := captureLogs(t)
	_, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{}, Recorder: &fakeRecorder{}, Logger: log, Now: func() time.Time { return t0.Add(time.Minute) },
		DNSGrants: []issuer.DNSGrant{{SPIFFEID: spiffeid.RequireFromString(istiodID), DNSNames: istiodNames}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "does not admit DNS names") || !strings.Contains(out, `"names":["`+istiodNames[1]+`"]`) {
		t.Errorf("log does not name exactly the unadmitted name:\n%s", out)
	}
}
