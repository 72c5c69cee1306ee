package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshca/meshca/agent/sdstest"
	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// signCRL has a sign a CRL numbered number at now, valid for validity,
// revoking serials.
func signCRL(t testing.TB, a *ca.Authority, number int64, now time.Time, validity time.Duration, serials ...int64) trust.CRL {
	t.Helper()
	req := ca.CRLRequest{Number: big.NewInt(number), Now: now, Validity: validity}
	for _, s := range serials {
		req.Serials = append(req.Serials, big.NewInt(s))
	}
	c, _, err := a.SignCRL(req)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// addCRLs adds crls to the entry of trust domain td of b, as an issuer adds
// its own CRLs to the bundle it relays (outside the root's signature), and
// returns b.
func addCRLs(b *meshcav1.Bundle, td string, crls ...trust.CRL) *meshcav1.Bundle {
	for _, d := range b.GetTrustDomains() {
		if d.GetTrustDomain() == td {
			for _, c := range crls {
				d.Crls = append(d.Crls, &meshcav1.CRL{Der: c.DER, IssuerChain: c.IssuerChain})
			}
		}
	}
	return b
}

// sameDERs reports whether got holds exactly the CRLs want, in any order.
func sameDERs(got [][]byte, want ...trust.CRL) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g []byte) bool { return bytes.Equal(g, w.DER) }) {
			return false
		}
	}
	return true
}

// servedCRLs returns what an SDS update carries as validation_context.crl.
func servedCRLs(u *sdstest.Update) [][]byte {
	var out [][]byte
	for _, rl := range u.CRLs {
		out = append(out, rl.Raw)
	}
	return out
}

// pemCRLs decodes concatenated "X509 CRL" PEM blocks to DER.
func pemCRLs(t testing.TB, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if block.Type != "X509 CRL" {
			t.Fatalf("PEM block %q, want X509 CRL", block.Type)
		}
		out = append(out, block.Bytes)
	}
}

// rejectedCRLs returns the value of crlRejectedMetricName for reason in g.
func rejectedCRLs(t testing.TB, g prometheus.Gatherer, reason string) float64 {
	t.Helper()
	return counterByReason(t, g, crlRejectedMetricName, reason)
}

// counterByReason returns the value of the counter name{reason} in g.
func counterByReason(t testing.TB, g prometheus.Gatherer, name, reason string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

// recvUntil receives from a stream until ok accepts a message, and returns
// it; the stream's context bounds the wait.
func recvUntil[T any](t *testing.T, recv func() (T, error), what string, ok func(T) bool) T {
	t.Helper()
	for {
		m, err := recv()
		if err != nil {
			t.Fatalf("no Workload API response with %s: %v", what, err)
		}
		if ok(m) {
			return m
		}
	}
}

// TestAgentServesCRLs runs the agent against an issuer that relays the
// root's signed bundle with its intermediate's CRLs added: they reach SDS
// ROOTCA, ALL and spiffe://cluster.local and the Workload API; a newer CRL
// under the same bundle sequence replaces the older one; corrupt, foreign
// and stale CRLs are dropped and counted while the rest of the bundle is
// applied and certificates keep rotating.
func TestAgentServesCRLs(t *testing.T) {
	now := time.Now()
	tree := testkit.New(t, testkit.Options{Now: now.Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, true)
	root := tree.Root.Certificate
	bundle := func(seq uint64, federated map[string][]*x509.Certificate, crls ...trust.CRL) *meshcav1.Bundle {
		return addCRLs(signedProto(t, trustBundle(seq, "cluster.local", []*x509.Certificate{root}, federated), tree.Root), "cluster.local", crls...)
	}
	crl1 := signCRL(t, tree.Intermediate, 1, now, time.Hour, 42)
	fi.pushBundle(bundle(10, nil, crl1))

	reg := prometheus.NewRegistry()
	ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), 2*time.Second, func(c *Config) { c.Registerer = reg })
	e := envoy(t, ra.cfg.SDSSocket, "node")
	def := subscribe(t, e, ResourceDefault)
	rootCA, all, own := subscribe(t, e, ResourceRootCA), subscribe(t, e, resourceAll), subscribe(t, e, "spiffe://cluster.local")
	next(t, def)
	var onCRL1 *sdstest.Update
	for _, s := range []*sdstest.Subscription{rootCA, all, own} {
		u := nextUntil(t, s, "the intermediate's CRL", func(u *sdstest.Update) bool { return sameDERs(servedCRLs(u), crl1) })
		rl := u.CRLs[0]
		if rl.Number.Int64() != 1 || len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Int64() != 42 ||
			rl.CheckSignatureFrom(tree.Intermediate.Certificate) != nil {
			t.Errorf("%s: CRL number %v revoking %d serials, want number 1 revoking serial 42 signed by the intermediate", s.Name, rl.Number, len(rl.RevokedCertificateEntries))
		}
		if !sameCerts(u.Roots, root) {
			t.Errorf("%s: %d roots, want the root", s.Name, len(u.Roots))
		}
		if s == rootCA {
			onCRL1 = u
		}
	}

	// The Workload API carries the CRL (DER) in both responses.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+ra.cfg.WorkloadSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wl := workload.NewSpiffeWorkloadAPIClient(conn)
	svids, err := wl.FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := wl.FetchX509Bundles(withHeader(ctx), &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvUntil(t, svids.Recv, "the CRL", func(r *workload.X509SVIDResponse) bool { return sameDERs(r.GetCrl(), crl1) })
	recvUntil(t, bundles.Recv, "the CRL", func(r *workload.X509BundlesResponse) bool { return sameDERs(r.GetCrl(), crl1) })

	// The issuer signs a newer CRL and relays the same root bundle (same
	// sequence) with it; the older copy still travels too. Only the newest
	// CRL of the intermediate is served, and Envoy gets it pushed.
	crl2 := signCRL(t, tree.Intermediate, 2, now, time.Hour, 42, 43)
	fi.pushBundle(bundle(10, nil, crl1, crl2))
	u := next(t, rootCA)
	if !sameDERs(servedCRLs(u), crl2) || u.Version == onCRL1.Version {
		t.Errorf("ROOTCA after the newer CRL: %d CRLs, version %q (was %q); want only CRL 2 under a new version", len(u.CRLs), u.Version, onCRL1.Version)
	}
	for _, s := range []*sdstest.Subscription{all, own} {
		if u := next(t, s); !sameDERs(servedCRLs(u), crl2) {
			t.Errorf("%s after the newer CRL: %d CRLs, want only CRL 2", s.Name, len(u.CRLs))
		}
	}
	recvUntil(t, svids.Recv, "CRL 2", func(r *workload.X509SVIDResponse) bool { return sameDERs(r.GetCrl(), crl2) })
	recvUntil(t, bundles.Recv, "CRL 2", func(r *workload.X509BundlesResponse) bool { return sameDERs(r.GetCrl(), crl2) })
	ra.logs.waitFor(t, "trust bundle updated", `"sequence":10`, `"crls_changed":true`)

	// A new bundle adds a federated trust domain, with a corrupt CRL, one
	// by an unknown CA and a stale one of the intermediate (numbered
	// higher than CRL 2): those three are dropped, logged and counted;
	// the federated domain and CRL 2 are served; rotation goes on.
	foreign, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "crl-foreign-root"), CommonName: "foreign root", Now: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	untrusted := signCRL(t, foreign, 5, now, time.Hour, 42)
	stale := signCRL(t, tree.Intermediate, 3, now.Add(-50*time.Minute), 10*time.Minute)
	fed := federatedRoot(t, "crl-fed")
	last := next(t, def)
	fi.pushBundle(bundle(11, map[string][]*x509.Certificate{"other.example": {fed}}, crl2, trust.CRL{DER: []byte("not a CRL")}, untrusted, stale))
	u = nextUntil(t, all, "the federated root", func(u *sdstest.Update) bool { return sameCerts(u.Roots, root, fed) })
	if !sameDERs(servedCRLs(u), crl2) {
		t.Errorf("ALL with rejected CRLs: %d CRLs, want only CRL 2", len(u.CRLs))
	}
	for _, reason := range []string{crlInvalid, crlUntrusted, crlStale} {
		line := ra.logs.waitFor(t, "CRL rejected", `"reason":"`+reason+`"`, `"sequence":11`)
		if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, `"trust_domain":"cluster.local"`) {
			t.Errorf("log line %s, want a WARN naming the trust domain", line)
		}
		if n := rejectedCRLs(t, reg, reason); n != 1 {
			t.Errorf("%s{reason=%q} = %v, want 1", crlRejectedMetricName, reason, n)
		}
	}
	ra.logs.waitFor(t, "trust bundle updated", `"sequence":11`)
	nextUntil(t, def, "a renewal after the rejected CRLs", func(u *sdstest.Update) bool { return !u.Chain[0].Equal(last.Chain[0]) })
	if err := ra.ready(); err != nil {
		t.Errorf("not ready: %v", err)
	}
	snap, _ := ra.pub.Current()
	if !sameDERs(snap.CRLs(), crl2) {
		t.Errorf("snapshot after a renewal: %d CRLs, want CRL 2", len(snap.CRLs()))
	}

	// The health server exports the counter.
	resp, err := (&http.Client{Timeout: waitTimeout}).Get("http://" + ra.boundHealthAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), crlRejectedMetricName+`{reason="untrusted"} 1`) {
		t.Errorf("/metrics: %d %v, want the CRL counter; body:\n%s", resp.StatusCode, err, body)
	}
}

// TestManagerCRLs: each CRL is verified against its own trust domain's
// roots and served with that domain; a CRL past NextUpdate stops being
// served at that moment, without waiting for a renewal or a bundle.
func TestManagerCRLs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		f := startManager(t, func(c *managerConfig) { c.Registerer = reg })
		t.Cleanup(f.mgr.Stop)
		fed, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "crl-fed-root"), CommonName: "federated root"})
		if err != nil {
			t.Fatal(err)
		}
		east := spiffeid.RequireTrustDomainFromString("east.example")
		now := time.Now()
		inter1 := signCRL(t, f.tree.Intermediate, 1, now, 2*time.Hour, 7)
		root1 := signCRL(t, f.tree.Root, 1, now, 10*time.Minute)
		root3 := signCRL(t, f.tree.Root, 3, now, 20*time.Minute)
		fed1 := signCRL(t, fed, 1, now, 2*time.Hour, 9)
		bundle := func(seq uint64, own ...trust.CRL) *trust.TrustBundle {
			return signedBy(t, &trust.TrustBundle{Sequence: seq, Domains: []trust.DomainBundle{
				// fed1 in the own domain does not chain to its roots.
				{TrustDomain: webID.TrustDomain(), Roots: f.tree.Bundle, CRLs: append(own, fed1)},
				// Another cluster under the same root carries a newer root
				// CRL: the newest of each issuer is served everywhere.
				{TrustDomain: east, Roots: f.tree.Bundle, CRLs: []trust.CRL{root3}},
				{TrustDomain: otherTD, Roots: mustBundle(t, fed.Certificate), CRLs: []trust.CRL{fed1}, Federated: true},
			}}, f.tree.Root)
		}
		if ok, err := f.mgr.SetTrustBundle(bundle(5, inter1, root1)); err != nil || !ok {
			t.Fatalf("SetTrustBundle: %v %v, want a change", ok, err)
		}
		snap := f.current()
		for _, tc := range []struct {
			name string
			want []trust.CRL
		}{
			{ResourceRootCA, []trust.CRL{inter1, root3}},
			{webID.TrustDomain().IDString(), []trust.CRL{inter1, root3}},
			{east.IDString(), []trust.CRL{root3}},
			{otherTD.IDString(), []trust.CRL{fed1}},
			{resourceAll, []trust.CRL{inter1, root3, fed1}},
		} {
			if got := pemCRLs(t, snap.sdsBundle(tc.name).crlPEM); !sameDERs(got, tc.want...) {
				t.Errorf("%s: %d CRLs, want %d", tc.name, len(got), len(tc.want))
			}
		}
		if !sameDERs(snap.CRLs(), inter1, root3, fed1) {
			t.Errorf("Workload API CRLs: %d, want 3", len(snap.CRLs()))
		}
		if n := rejectedCRLs(t, reg, crlUntrusted); n != 1 {
			t.Errorf("untrusted CRLs counted %v, want 1 (the federated CRL in the own domain)", n)
		}

		// The same bundle again changes nothing; a newer intermediate CRL
		// under the same sequence replaces the older one.
		if ok, err := f.mgr.SetTrustBundle(bundle(5, inter1, root1)); err != nil || ok {
			t.Errorf("same bundle: %v %v, want no change", ok, err)
		}
		inter2 := signCRL(t, f.tree.Intermediate, 2, now, 2*time.Hour, 7, 8)
		if ok, err := f.mgr.SetTrustBundle(bundle(5, inter2, root1)); err != nil || !ok {
			t.Fatalf("same sequence, newer CRL: %v %v, want a change", ok, err)
		}
		replaced := f.current()
		if replaced.CRLVersion() == snap.CRLVersion() || !sameDERs(pemCRLs(t, replaced.sdsBundle(ResourceRootCA).crlPEM), inter2, root3) ||
			replaced.SVIDVersion() != snap.SVIDVersion() || replaced.sdsBundle(ResourceRootCA).version == snap.sdsBundle(ResourceRootCA).version {
			t.Error("a newer CRL under the same sequence did not replace the older one under a new SDS version")
		}

		// The root CRL expires after 20 minutes, before the certificate is
		// renewed: it goes at once, counted as stale.
		_, changed := f.pub.Current()
		time.Sleep(20*time.Minute + time.Second)
		select {
		case <-changed:
		default:
			t.Fatal("the expired root CRL was not withdrawn")
		}
		expired := f.current()
		if expired.SVIDVersion() != snap.SVIDVersion() || !sameDERs(expired.CRLs(), inter2, fed1) ||
			!sameDERs(pemCRLs(t, expired.sdsBundle(east.IDString()).crlPEM)) {
			t.Errorf("after the root CRL expired: %d CRLs, want the intermediate's and the federated one", len(expired.CRLs()))
		}
		if n := rejectedCRLs(t, reg, crlStale); n != 1 {
			t.Errorf("stale CRLs counted %v, want 1", n)
		}
		f.logs.waitFor(t, "CRL expired", `"crl_number":"3"`, `"level":"WARN"`)

		// Renewals keep the CRLs; when the last expire nothing is served.
		time.Sleep(2 * time.Hour)
		last := f.current()
		if last.SVIDVersion() == snap.SVIDVersion() || len(last.CRLs()) != 0 || last.CRLVersion() != "" || last.sdsBundle(resourceAll).crlPEM != nil {
			t.Errorf("2 hours later: %d CRLs (version %q), want a renewed certificate and none", len(last.CRLs()), last.CRLVersion())
		}
		if n := rejectedCRLs(t, reg, crlStale); n != 3 {
			t.Errorf("stale CRLs counted %v, want 3", n)
		}
	})
}
