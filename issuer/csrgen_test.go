package issuer_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// testKey returns a cached key of the given kind: p256, p384, p224, rsa1024,
// rsa2048, ed25519.
func testKey(tb testing.TB, kind string) crypto.Signer {
	tb.Helper()
	return testkit.KeyOf(tb, kind)
}

// csrPEM builds a PEM CSR for key with the names in tmpl.
func csrPEM(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		if tmpl.SignatureAlgorithm == 0 {
			tmpl.SignatureAlgorithm = x509.SHA256WithRSA
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func mustURL(tb testing.TB, s string) *url.URL {
	tb.Helper()
	u, err := url.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}
