package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// CSR returns a DER certificate request with no subject and no names, signed
// by a fresh ECDSA P-256 key: what a workload or an administrator sends, from
// which a meshca CA takes only the key.
func CSR(tb testing.TB) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		tb.Fatalf("create CSR: %v", err)
	}
	return der
}

// CSRPEM is CSR, PEM-encoded, as the Istio certificate API carries it.
func CSRPEM(tb testing.TB) []byte {
	tb.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: CSR(tb)})
}
