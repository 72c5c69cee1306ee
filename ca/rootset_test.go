package ca_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
)

func newTestRoot(t *testing.T, key string, now time.Time, ttl time.Duration) *ca.Authority {
	t.Helper()
	r, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, key), Now: now, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRootStatesLifecycle(t *testing.T) {
	old := newTestRoot(t, "root-a", t0, 10*24*time.Hour)
	next := newTestRoot(t, "root-b", t0.Add(time.Hour), 10*24*time.Hour)
	roots := []ca.RootRecord{
		{Cert: old.Certificate, AddedAt: t0, ActivateAt: t0},
		{Cert: next.Certificate, AddedAt: t0.Add(time.Hour), ActivateAt: t0.Add(2 * time.Hour)},
	}
	lastUse := map[[32]byte]time.Time{ca.Fingerprint(old.Certificate): t0.Add(5 * time.Hour)}
	for _, tc := range []struct {
		at        time.Time
		old, next ca.RootState
	}{
		{t0.Add(90 * time.Minute), ca.RootActive, ca.RootPrepared},              // new root propagating
		{t0.Add(3 * time.Hour), ca.RootRetiring, ca.RootActive},                 // switched; old intermediates alive
		{t0.Add(6 * time.Hour), ca.RootRetired, ca.RootActive},                  // nothing under the old root is valid
		{t0.Add(240*time.Hour + 30*time.Minute), ca.RootRetired, ca.RootActive}, // old root expired, new one still valid
	} {
		st := ca.RootStates(roots, lastUse, tc.at)
		if st[0].State != tc.old || st[1].State != tc.next {
			t.Errorf("at %v: states %s/%s, want %s/%s", tc.at.Sub(t0), st[0].State, st[1].State, tc.old, tc.next)
		}
	}
	if ca.RootRetired.InBundle() || !ca.RootRetiring.InBundle() || !ca.RootPrepared.InBundle() {
		t.Error("InBundle: only retired roots leave the bundle")
	}
}

func TestRootStatesExpiredRootNeverActive(t *testing.T) {
	short := newTestRoot(t, "root-a", t0, time.Hour)
	st := ca.RootStates([]ca.RootRecord{{Cert: short.Certificate, ActivateAt: t0}}, nil, t0.Add(2*time.Hour))
	if st[0].State != ca.RootRetired {
		t.Errorf("expired root is %s, want retired", st[0].State)
	}
}

func TestTrustBundleProtoRoundTrip(t *testing.T) {
	a := newTestRoot(t, "root-a", t0, 24*time.Hour)
	b := newTestRoot(t, "root-b", t0, 24*time.Hour)
	own, _ := ca.NewBundle(a.Certificate)
	fed, _ := ca.NewBundle(b.Certificate)
	in := &ca.TrustBundle{
		Sequence: 42, ActiveRoot: ca.Fingerprint(a.Certificate), RefreshHint: time.Minute,
		Domains: []ca.DomainBundle{
			{TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Roots: own},
			{TrustDomain: spiffeid.RequireTrustDomainFromString("partner.example"), Roots: fed, Federated: true, CRLs: []ca.CRL{{DER: []byte{1, 2}, IssuerChain: [][]byte{{3}}}}},
		},
	}
	out, err := ca.TrustBundleFromProto(in.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	if !in.Equal(out) || out.Sequence != 42 || out.RefreshHint != time.Minute {
		t.Fatalf("round trip changed the bundle: %+v", out)
	}
	if got := out.OwnRoots().Roots(); len(got) != 1 || !got[0].Equal(a.Certificate) {
		t.Errorf("OwnRoots = %d roots, want root-a only", len(got))
	}
	if got := out.AllRoots().Roots(); len(got) != 2 {
		t.Errorf("AllRoots = %d roots, want 2", len(got))
	}
}

func TestTrustBundleFromProtoRejects(t *testing.T) {
	a := newTestRoot(t, "root-a", t0, 24*time.Hour)
	good := func() *meshcav1.Bundle {
		return &meshcav1.Bundle{TrustDomains: []*meshcav1.TrustDomainBundle{{TrustDomain: "east.example", X509Authorities: [][]byte{a.Certificate.Raw}}}}
	}
	cases := map[string]func(*meshcav1.Bundle){
		"bad trust domain":  func(b *meshcav1.Bundle) { b.TrustDomains[0].TrustDomain = "East Example" },
		"garbage authority": func(b *meshcav1.Bundle) { b.TrustDomains[0].X509Authorities = [][]byte{{0x30, 0x01}} },
		"no authorities":    func(b *meshcav1.Bundle) { b.TrustDomains[0].X509Authorities = nil },
		"duplicate domain":  func(b *meshcav1.Bundle) { b.TrustDomains = append(b.TrustDomains, b.TrustDomains[0]) },
		"only federated":    func(b *meshcav1.Bundle) { b.TrustDomains[0].Federated = true },
		"short active hash": func(b *meshcav1.Bundle) { b.ActiveRootSha256 = []byte{1} },
		"short signer hash": func(b *meshcav1.Bundle) { b.Signature, b.SignerSha256 = []byte{1}, []byte{1} },
		"no signer hash":    func(b *meshcav1.Bundle) { b.Signature = []byte{1} },
		"no signature":      func(b *meshcav1.Bundle) { b.SignerSha256 = bytes.Repeat([]byte{1}, 32) },
	}
	if _, err := ca.TrustBundleFromProto(good()); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	for name, mutate := range cases {
		b := good()
		mutate(b)
		if _, err := ca.TrustBundleFromProto(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ca.TrustBundleFromProto(nil); err == nil {
		t.Error("nil bundle accepted")
	}
}
