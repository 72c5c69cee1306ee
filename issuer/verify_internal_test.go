package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/catest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The issuer verifies each leaf against its intermediate as the anchor (the
// intermediate's own chain is verified in SetAuthority). This proves that
// mode still rejects what the full chain would: a foreign trust domain (name
// constraint on the anchor), a missing usage, a foreign signer, and expiry.
func TestVerifyRejectsWhatTheChainWould(t *testing.T) {
	now := time.Now()
	tree := catest.New(t, catest.Options{Now: now})
	iss := &Issuer{cfg: Config{TrustDomain: tree.TrustDomain, Now: func() time.Time { return now }}}
	if err := iss.SetAuthority(tree.Intermediate, tree.Bundle); err != nil {
		t.Fatal(err)
	}
	s := iss.signing.Load()
	if !s.root.Equal(tree.Root.Certificate) || len(s.chain) != 1 || !s.chain[0].Equal(tree.Intermediate.Certificate) {
		t.Fatal("signing state does not hold intermediate and root")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sign := func(signer *ca.Authority, uri string, eku []x509.ExtKeyUsage, notAfter time.Time) *x509.Certificate {
		u, _ := url.Parse(uri)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(7), URIs: []*url.URL{u}, NotBefore: now.Add(-time.Minute), NotAfter: notAfter,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku,
		}, signer.Certificate, key.Public(), signer.Signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	other := catest.New(t, catest.Options{Now: now, TrustDomain: "other.example"})
	for _, tc := range []struct {
		name string
		leaf *x509.Certificate
		id   string
		ok   bool
	}{
		{"good", sign(tree.Intermediate, "spiffe://cluster.local/ns/a/sa/b", both, now.Add(time.Hour)), "spiffe://cluster.local/ns/a/sa/b", true},
		{"foreign trust domain", sign(tree.Intermediate, "spiffe://other.example/ns/a/sa/b", both, now.Add(time.Hour)), "spiffe://other.example/ns/a/sa/b", false},
		{"client auth missing", sign(tree.Intermediate, "spiffe://cluster.local/ns/a/sa/b", both[:1], now.Add(time.Hour)), "spiffe://cluster.local/ns/a/sa/b", false},
		{"other signer", sign(other.Intermediate, "spiffe://cluster.local/ns/a/sa/b", both, now.Add(time.Hour)), "spiffe://cluster.local/ns/a/sa/b", false},
		{"expired", sign(tree.Intermediate, "spiffe://cluster.local/ns/a/sa/b", both, now.Add(-time.Second)), "spiffe://cluster.local/ns/a/sa/b", false},
		{"other identity", sign(tree.Intermediate, "spiffe://cluster.local/ns/a/sa/c", both, now.Add(time.Hour)), "spiffe://cluster.local/ns/a/sa/b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.verify(tc.leaf, spiffeid.RequireFromString(tc.id), now)
			if (err == nil) != tc.ok {
				t.Errorf("verify err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
