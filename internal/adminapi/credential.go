package adminapi

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
)

// Lifetimes of admin certificates.
const (
	// DefaultCredentialTTL is an admin certificate's life when the request
	// names none.
	DefaultCredentialTTL = 24 * time.Hour
	// MaxCredentialTTL bounds an admin certificate's life: a stolen one
	// stops working within it even if nobody revokes it.
	MaxCredentialTTL = 7 * 24 * time.Hour
)

// maxCSRBytes bounds the CSR of an admin credential request.
const maxCSRBytes = 16 << 10

// CredentialRequest is a checked IssueAdminCredential request.
type CredentialRequest struct {
	ID        spiffeid.ID
	PublicKey crypto.PublicKey
	TTL       time.Duration
}

// ParseCredentialRequest checks an IssueAdminCredential request: a SPIFFE ID
// with a path, a CSR whose signature verifies (only its public key is
// used), and a lifetime up to MaxCredentialTTL (zero: the default). Its
// errors are the caller's fault.
func ParseCredentialRequest(req *meshcav1.IssueAdminCredentialRequest) (CredentialRequest, error) {
	id, err := spiffeid.FromString(req.GetSpiffeId())
	switch {
	case err != nil:
		return CredentialRequest{}, fmt.Errorf("SPIFFE ID %q: %w", req.GetSpiffeId(), err)
	case id.Path() == "":
		return CredentialRequest{}, fmt.Errorf("SPIFFE ID %s names a trust domain, not an admin", id)
	case len(req.GetCsr()) == 0 || len(req.GetCsr()) > maxCSRBytes:
		return CredentialRequest{}, fmt.Errorf("CSR of %d bytes: want 1 to %d", len(req.GetCsr()), maxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return CredentialRequest{}, fmt.Errorf("CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return CredentialRequest{}, fmt.Errorf("CSR signature: %w", err)
	}
	ttl := DefaultCredentialTTL
	if s := req.GetTtlSeconds(); s != 0 {
		if s < 0 || s > int64(MaxCredentialTTL/time.Second) {
			return CredentialRequest{}, fmt.Errorf("ttl %ds: want 1s to %v", s, MaxCredentialTTL)
		}
		ttl = time.Duration(s) * time.Second
	}
	return CredentialRequest{ID: id, PublicKey: csr.PublicKey, TTL: ttl}, nil
}

// SignCredential signs the admin certificate of r with root at now: a
// client-only, non-CA X509-SVID signed directly by root, verified as the
// admin API over mutual TLS will verify it before it is returned.
func SignCredential(root *ca.Authority, r CredentialRequest, now time.Time) (*x509.Certificate, error) {
	if root == nil {
		return nil, errors.New("admin credential: no root to sign with")
	}
	cert, err := root.SignLeaf(ca.LeafRequest{
		PublicKey: r.PublicKey, URIs: []*url.URL{r.ID.URL()}, TTL: r.TTL, Now: now,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("admin credential: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Certificate)
	chains, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil || len(chains) != 1 || len(chains[0]) != 2 || cert.IsCA {
		return nil, fmt.Errorf("admin credential: self-check: %v", err)
	}
	return cert, nil
}
