package trust_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// t0 is the fixed instant the tests of this package start from.
var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func TestTrustBundleProtoRoundTrip(t *testing.T) {
	a := testkit.Root(t, "root-a", t0, 24*time.Hour)
	b := testkit.Root(t, "root-b", t0, 24*time.Hour)
	own, _ := trust.NewBundle(a.Certificate)
	fed, _ := trust.NewBundle(b.Certificate)
	in := &trust.TrustBundle{
		Sequence: 42, ActiveRoot: trust.Fingerprint(a.Certificate), RefreshHint: time.Minute,
		Domains: []trust.DomainBundle{
			{TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Roots: own},
			{TrustDomain: spiffeid.RequireTrustDomainFromString("partner.example"), Roots: fed, Federated: true, CRLs: []trust.CRL{{DER: []byte{1, 2}, IssuerChain: [][]byte{{3}}}}},
		},
	}
	out, err := trust.TrustBundleFromProto(in.ToProto())
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
	a := testkit.Root(t, "root-a", t0, 24*time.Hour)
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
	if _, err := trust.TrustBundleFromProto(good()); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	for name, mutate := range cases {
		b := good()
		mutate(b)
		if _, err := trust.TrustBundleFromProto(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := trust.TrustBundleFromProto(nil); err == nil {
		t.Error("nil bundle accepted")
	}
}
