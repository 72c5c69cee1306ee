package issuer_test

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"

	"github.com/meshca/meshca/issuer"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzCheckCSR feeds arbitrary bytes to the CSR checker. It must never
// panic, every rejection must be classified (InvalidRequest or
// PermissionDenied), and anything it accepts must really satisfy the rules.
// Seeds live in testdata/fuzz/FuzzCheckCSR and run in every `go test`.
func FuzzCheckCSR(f *testing.F) {
	id := spiffeid.RequireFromString(webID)
	f.Add(csrPEM(f, testKey(f, "p256"), nil))
	f.Add(csrPEM(f, testKey(f, "ed25519"), &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}))
	f.Add(csrPEM(f, testKey(f, "p256"), &x509.CertificateRequest{DNSNames: []string{"a.example"}}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := issuer.CheckCSR(data, id)
		if err != nil {
			if !errors.Is(err, issuer.ErrInvalidRequest) && !errors.Is(err, issuer.ErrPermissionDenied) {
				t.Fatalf("unclassified error: %v", err)
			}
			if csr != nil {
				t.Fatal("CSR returned with an error")
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR with a bad signature: %v", err)
		}
		if csr.Subject.CommonName != "" || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
			t.Fatalf("accepted forbidden names: %+v", csr)
		}
		if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != webID) {
			t.Fatalf("accepted URI SANs %v", csr.URIs)
		}
		if len(data) > issuer.MaxCSRBytes {
			t.Fatalf("accepted %d bytes", len(data))
		}
	})
}
