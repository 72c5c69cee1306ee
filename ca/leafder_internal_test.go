package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/test/benchcpu"
)

func mustKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testIntermediate returns an intermediate whose key is on curve c, under a
// root whose key is on the same curve.
func testIntermediate(t testing.TB, c elliptic.Curve, now time.Time) *Authority {
	t.Helper()
	root, err := NewRoot(RootConfig{Signer: mustKey(t, c), Now: now, TTL: 100 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t, c)
	cert, err := root.SignIntermediate(IntermediateRequest{
		PublicKey: key.Public(), TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Cluster: "east", Now: now, TTL: 90 * 365 * 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthority(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// signLeafDER replaces x509.CreateCertificate for the workload leaf, so
// what it signs must be what CreateCertificate would have signed: the same
// TBSCertificate, byte for byte, for every key the issuer accepts, under
// P-256 and P-384 authorities, in both ASN.1 time encodings.
func TestLeafDERMatchesCreateCertificate(t *testing.T) {
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	leafKeys := map[string]crypto.PublicKey{
		"P-256": mustKey(t, elliptic.P256()).Public(), "P-384": mustKey(t, elliptic.P384()).Public(), "Ed25519": ed,
	}
	uris := []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/default/sa/web"}}
	for _, now := range []time.Time{time.Date(2026, 12, 7, 2, 30, 5, 123456789, time.UTC), time.Date(2051, 1, 2, 3, 4, 5, 0, time.UTC)} {
		for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
			a := testIntermediate(t, curve, now.Add(-time.Hour))
			alg, hash, ok := a.leafDERSigner()
			if !ok {
				t.Fatalf("%s authority: signLeafDER does not handle it", curve.Params().Name)
			}
			for name, pub := range leafKeys {
				tmpl := &x509.Certificate{
					SerialNumber: new(big.Int).Lsh(big.NewInt(0x7fabcdef), 96), URIs: uris,
					NotBefore: now.Add(-backdate), NotAfter: now.Add(time.Hour),
					KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
					ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				}
				if !leafDERShape(tmpl) {
					t.Fatal("the workload leaf template is not of leafDERShape")
				}
				want, err := x509.CreateCertificate(rand.Reader, tmpl, a.Certificate, pub, a.Signer)
				if err != nil {
					t.Fatal(err)
				}
				wantCert, err := x509.ParseCertificate(want)
				if err != nil {
					t.Fatal(err)
				}
				got, err := a.leafTBS(tmpl, pub, alg)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, wantCert.RawTBSCertificate) {
					t.Errorf("%d, %s CA, %s leaf: TBS differs from CreateCertificate's\n got %x\nwant %x",
						now.Year(), curve.Params().Name, name, got, wantCert.RawTBSCertificate)
				}
				der, err := a.signLeafDER(tmpl, pub, alg, hash)
				if err != nil {
					t.Fatal(err)
				}
				cert, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				if err := cert.CheckSignatureFrom(a.Certificate); err != nil {
					t.Errorf("signLeafDER's certificate does not verify under its authority: %v", err)
				}
			}
		}
	}
}

// Any other shape, or an authority key signLeafDER does not handle, still
// goes through x509.CreateCertificate.
func TestLeafDERShape(t *testing.T) {
	base := func() *x509.Certificate {
		return &x509.Certificate{
			URIs: []*url.URL{{Scheme: "spiffe", Host: "td"}}, KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
	}
	for name, edit := range map[string]func(*x509.Certificate){
		"DNS name":          func(c *x509.Certificate) { c.DNSNames = []string{"a"} },
		"no URI":            func(c *x509.Certificate) { c.URIs = nil },
		"RSA key usage":     func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageKeyEncipherment },
		"server auth only":  func(c *x509.Certificate) { c.ExtKeyUsage = c.ExtKeyUsage[:1] },
		"CA":                func(c *x509.Certificate) { c.IsCA = true },
		"no basic constrai": func(c *x509.Certificate) { c.BasicConstraintsValid = false },
	} {
		c := base()
		edit(c)
		if leafDERShape(c) {
			t.Errorf("%s: leafDERShape accepts it", name)
		}
	}
	if !leafDERShape(base()) {
		t.Error("leafDERShape refuses the workload leaf")
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := (&Authority{Certificate: &x509.Certificate{PublicKey: &rsaKey.PublicKey}}).leafDERSigner(); ok {
		t.Error("leafDERSigner accepts an RSA authority")
	}
}

// BenchmarkSignLeafDER compares, in one run, signing the workload leaf with
// signLeafDER and with x509.CreateCertificate (both verify the signature).
// Run the two alternately (-bench 'SignLeafDER/signLeafDER' and
// -bench 'SignLeafDER/CreateCertificate' in turn) on a shared machine.
func BenchmarkSignLeafDER(b *testing.B) {
	now := time.Now()
	a := testIntermediate(&testing.T{}, elliptic.P256(), now.Add(-time.Hour))
	pub := mustKey(&testing.T{}, elliptic.P256()).Public()
	alg, hash, _ := a.leafDERSigner()
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).Lsh(big.NewInt(0x7fabcdef), 96),
		URIs:         []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/default/sa/web"}},
		NotBefore:    now.Add(-backdate), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	b.Run("CreateCertificate", func(b *testing.B) {
		b.ReportAllocs()
		defer benchcpu.Start(b)()
		for b.Loop() {
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, a.Certificate, pub, a.Signer); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("signLeafDER", func(b *testing.B) {
		b.ReportAllocs()
		defer benchcpu.Start(b)()
		for b.Loop() {
			if _, err := a.signLeafDER(tmpl, pub, alg, hash); err != nil {
				b.Fatal(err)
			}
		}
	})
}
