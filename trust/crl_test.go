package trust_test

import (
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

func TestCRLSignVerify(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	now := t0.Add(time.Hour)
	serials := []*big.Int{big.NewInt(7), big.NewInt(42)}
	crl, rl, err := tree.Intermediate.SignCRL(ca.CRLRequest{Serials: serials, Now: now, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(rl.RevokedCertificateEntries) != 2 || rl.Number.Int64() != now.UnixMilli() {
		t.Fatalf("CRL has %d entries, number %v", len(rl.RevokedCertificateEntries), rl.Number)
	}
	if len(crl.IssuerChain) != 1 || string(crl.IssuerChain[0]) != string(tree.Intermediate.Certificate.Raw) {
		t.Fatal("an intermediate's CRL must carry the intermediate as its issuer chain")
	}
	got, issuer, err := trust.VerifyCRL(crl, tree.Bundle, now.Add(time.Minute))
	if err != nil || !issuer.Equal(tree.Intermediate.Certificate) || len(got.RevokedCertificateEntries) != 2 {
		t.Fatalf("VerifyCRL: %v", err)
	}

	// A root's CRL names no chain and is found among the roots.
	rootCRL, _, err := tree.Root.SignCRL(ca.CRLRequest{Serials: serials[:1], Now: now})
	if err != nil || len(rootCRL.IssuerChain) != 0 {
		t.Fatalf("root CRL: %v, chain %d", err, len(rootCRL.IssuerChain))
	}
	if _, issuer, err := trust.VerifyCRL(rootCRL, tree.Bundle, now); err != nil || !issuer.Equal(tree.Root.Certificate) {
		t.Fatalf("root CRL: %v", err)
	}

	other := testkit.New(t, testkit.Options{Now: t0, RootKey: "other-root", TrustDomain: "other.example"})
	tampered := trust.CRL{DER: append([]byte(nil), crl.DER...), IssuerChain: crl.IssuerChain}
	tampered.DER[len(tampered.DER)-5] ^= 0xff
	for _, tc := range []struct {
		name  string
		crl   trust.CRL
		roots *trust.Bundle
		at    time.Time
		want  error
	}{
		{"garbage", trust.CRL{DER: []byte("not a crl")}, tree.Bundle, now, trust.ErrCRLInvalid},
		{"tampered", tampered, tree.Bundle, now, trust.ErrCRLInvalid},
		{"issuer from another root", crl, other.Bundle, now, trust.ErrCRLUntrusted},
		{"root CRL under another root", rootCRL, other.Bundle, now, trust.ErrCRLUntrusted},
		{"chain of garbage", trust.CRL{DER: crl.DER, IssuerChain: [][]byte{[]byte("x")}}, tree.Bundle, now, trust.ErrCRLInvalid},
		{"issuer swapped", trust.CRL{DER: crl.DER, IssuerChain: [][]byte{other.Intermediate.Certificate.Raw}}, other.Bundle, now, trust.ErrCRLInvalid},
		{"stale", crl, tree.Bundle, now.Add(2 * time.Hour), trust.ErrCRLStale},
		{"not yet valid", crl, tree.Bundle, now.Add(-time.Hour), trust.ErrCRLStale},
	} {
		if _, _, err := trust.VerifyCRL(tc.crl, tc.roots, tc.at); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestCRLNotAfterClampedAndExpiredCA(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0, IntermediateTTL: 2 * time.Hour})
	_, rl, err := tree.Intermediate.SignCRL(ca.CRLRequest{Now: t0.Add(time.Hour), Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rl.NextUpdate.After(tree.Intermediate.Certificate.NotAfter) {
		t.Errorf("NextUpdate %v outlives the CA (%v)", rl.NextUpdate, tree.Intermediate.Certificate.NotAfter)
	}
	if _, _, err := tree.Intermediate.SignCRL(ca.CRLRequest{Now: t0.Add(3 * time.Hour)}); !errors.Is(err, ca.ErrCAExpired) {
		t.Errorf("expired CA signed a CRL: %v", err)
	}
}

// CRLs travel outside the bundle signature: an issuer adds its own to the
// root's signed bundle and the signature still verifies.
func TestCRLsNotCoveredBySignature(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	b := &trust.TrustBundle{Sequence: 1, Domains: []trust.DomainBundle{{TrustDomain: tree.TrustDomain, Roots: tree.Bundle}}}
	if err := ca.SignTrustBundle(b, tree.Root.Signer, tree.Root.Certificate); err != nil {
		t.Fatal(err)
	}
	crl, _, err := tree.Intermediate.SignCRL(ca.CRLRequest{Now: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	b.Domains[0].CRLs = append(b.Domains[0].CRLs, crl)
	out, err := trust.TrustBundleFromProto(b.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	if err := out.VerifySignature(tree.Bundle, t0.Add(time.Minute)); err != nil {
		t.Fatalf("a CRL added after signing broke the signature: %v", err)
	}
	if len(out.Domains[0].CRLs) != 1 || string(out.Domains[0].CRLs[0].DER) != string(crl.DER) {
		t.Fatal("the CRL did not survive the wire")
	}
}
