package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The issuer checks each leaf without repeating the signature check that
// x509.CreateCertificate made (see signing.verify). This proves it still
// rejects what full RFC 5280 path validation would, and agrees with
// crypto/x509's own verifier on every case where the signature is the
// intermediate's.
func TestVerifyRejectsWhatTheChainWould(t *testing.T) {
	now := time.Now()
	tree := testkit.New(t, testkit.Options{Now: now})
	iss := &Issuer{cfg: Config{TrustDomain: tree.TrustDomain, Now: func() time.Time { return now }}}
	if err := iss.SetAuthority(tree.Intermediate, tree.Bundle); err != nil {
		t.Fatal(err)
	}
	s := iss.current()
	if !s.root.Equal(tree.Root.Certificate) || len(s.chain) != 1 || !s.chain[0].Equal(tree.Intermediate.Certificate) {
		t.Fatal("signing state does not hold intermediate and root")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	type leafSpec struct {
		uri      string
		eku      []x509.ExtKeyUsage
		notAfter time.Time
		edit     func(*x509.Certificate)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	sign := func(signer *ca.Authority, l leafSpec) *x509.Certificate {
		t.Helper()
		u, _ := url.Parse(l.uri)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(7), URIs: []*url.URL{u}, NotBefore: signer.Certificate.NotBefore, NotAfter: l.notAfter,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: l.eku, BasicConstraintsValid: true,
		}
		if l.edit != nil {
			l.edit(tmpl)
		}
		return testkit.Certificate(t, tmpl, signer.Certificate, key.Public(), signer.Signer)
	}
	const id = "spiffe://cluster.local/ns/a/sa/b"
	hour := now.Add(time.Hour)
	other := testkit.New(t, testkit.Options{Now: now, TrustDomain: "other.example"})
	for _, tc := range []struct {
		name   string
		signer *ca.Authority
		leaf   leafSpec
		id     string
		pub    crypto.PublicKey
		ok     bool
		// stdlibAgrees is false where the check is meshca's policy rather
		// than RFC 5280's (crypto/x509 accepts those leaves).
		stdlibAgrees bool
	}{
		{"good", tree.Intermediate, leafSpec{uri: id, eku: both, notAfter: hour}, id, key.Public(), true, true},
		{"foreign trust domain", tree.Intermediate, leafSpec{uri: "spiffe://other.example/ns/a/sa/b", eku: both, notAfter: hour}, "spiffe://other.example/ns/a/sa/b", key.Public(), false, true},
		{"subdomain excluded", tree.Intermediate, leafSpec{uri: "spiffe://evil.cluster.local/ns/a/sa/b", eku: both, notAfter: hour}, "spiffe://evil.cluster.local/ns/a/sa/b", key.Public(), false, true},
		{"client auth missing", tree.Intermediate, leafSpec{uri: id, eku: both[:1], notAfter: hour}, id, key.Public(), false, true},
		{"other signer", other.Intermediate, leafSpec{uri: id, eku: both, notAfter: hour}, id, key.Public(), false, true},
		{"expired", tree.Intermediate, leafSpec{uri: id, eku: both, notAfter: now.Add(-time.Second)}, id, key.Public(), false, true},
		{"other identity", tree.Intermediate, leafSpec{uri: "spiffe://cluster.local/ns/a/sa/c", eku: both, notAfter: hour}, id, key.Public(), false, false},
		{"other public key", tree.Intermediate, leafSpec{uri: id, eku: both, notAfter: hour}, id, otherKey.Public(), false, false},
		{"extra DNS name", tree.Intermediate, leafSpec{uri: id, eku: both, notAfter: hour, edit: func(c *x509.Certificate) { c.DNSNames = []string{"a.cluster.local"} }}, id, key.Public(), false, false},
		{"common name", tree.Intermediate, leafSpec{uri: id, eku: both, notAfter: hour, edit: func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: "x"} }}, id, key.Public(), false, false},
		{"leaf is a CA", tree.Intermediate, leafSpec{uri: id, eku: both, notAfter: hour, edit: func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }}, id, key.Public(), false, false},
		{"outlives intermediate", tree.Intermediate, leafSpec{uri: id, eku: both, notAfter: tree.Intermediate.Certificate.NotAfter.Add(time.Hour)}, id, key.Public(), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := sign(tc.signer, tc.leaf)
			err := s.verify(leaf, tc.pub, spiffeid.RequireFromString(tc.id), nil, now)
			if (err == nil) != tc.ok {
				t.Fatalf("verify err = %v, want ok=%v", err, tc.ok)
			}
			if !tc.stdlibAgrees {
				return
			}
			inters := x509.NewCertPool()
			inters.AddCert(tree.Intermediate.Certificate)
			_, stdErr := leaf.Verify(x509.VerifyOptions{
				Roots: tree.Bundle.Pool(), Intermediates: inters, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if (stdErr == nil) != tc.ok {
				t.Errorf("crypto/x509 err = %v, meshca err = %v: they disagree", stdErr, err)
			}
		})
	}
}

func TestDomainMatches(t *testing.T) {
	for _, tc := range []struct {
		host, constraint string
		want             bool
	}{
		{"cluster.local", "cluster.local", true},
		{"Cluster.Local", "cluster.local", true},
		{"a.cluster.local", "cluster.local", true},
		{"evilcluster.local", "cluster.local", false},
		{"cluster.local", ".cluster.local", false},
		{"a.cluster.local", ".cluster.local", true},
		{"anything", "", true},
		{"other.example", "cluster.local", false},
	} {
		if got := domainMatches(tc.host, tc.constraint); got != tc.want {
			t.Errorf("domainMatches(%q, %q) = %v, want %v", tc.host, tc.constraint, got, tc.want)
		}
	}
}

func TestCertPEMMatchesEncodingPEM(t *testing.T) {
	for _, n := range []int{0, 1, 47, 48, 49, 95, 96, 97, 700, 1023} {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(i * 7)
		}
		want := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: raw}))
		if got := certPEM(&x509.Certificate{Raw: raw}); got != want {
			t.Errorf("%d bytes: certPEM =\n%s\nwant\n%s", n, got, want)
		}
	}
}

// A leaf with DNS names passes only with exactly the names asked for, each
// inside every CA's DNS name constraints: a signer that ignored them (a
// forged leaf under an intermediate that does not admit the name) is
// caught before anything leaves.
func TestVerifyDNSNames(t *testing.T) {
	now := time.Now()
	tree := testkit.New(t, testkit.Options{Now: now, WorkloadDNSNames: []string{"istiod.istio-system.svc"}})
	iss := &Issuer{cfg: Config{TrustDomain: tree.TrustDomain, Now: func() time.Time { return now }}}
	if err := iss.SetAuthority(tree.Intermediate, tree.Bundle); err != nil {
		t.Fatal(err)
	}
	s := iss.current()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/istio-system/sa/istiod")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name       string
		leafNames  []string
		askedNames []string
		ok         bool
	}{
		{"granted name", []string{"istiod.istio-system.svc"}, []string{"istiod.istio-system.svc"}, true},
		{"name outside the constraints", []string{"x.istiod.istio-system.svc"}, []string{"x.istiod.istio-system.svc"}, false},
		{"other name than asked", []string{"istiod.istio-system.svc"}, []string{"meshca.meshca-system.svc"}, false},
		{"names not asked for", []string{"istiod.istio-system.svc"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(9), URIs: []*url.URL{id.URL()}, DNSNames: tc.leafNames,
				NotBefore: tree.Intermediate.Certificate.NotBefore, NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tree.Intermediate.Certificate, key.Public(), tree.Intermediate.Signer)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.verify(leaf, key.Public(), id, tc.askedNames, now); (err == nil) != tc.ok {
				t.Fatalf("verify err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
