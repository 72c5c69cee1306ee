package trust

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
)

// Bundle is a set of trusted root CA certificates. A Bundle is immutable:
// changes produce a new Bundle, so it can be shared between goroutines and
// swapped atomically. The sequence number, the trust domains (own and
// federated) with their CRLs, and the signature travel in a TrustBundle,
// which holds one Bundle per trust domain.
type Bundle struct {
	roots []*x509.Certificate
	pool  *x509.CertPool
	// cross are the cross certificates between roots (WithCrossSigned);
	// they are not anchors and stay out of pool.
	cross []CrossCert
}

// NewBundle returns a bundle of roots. Duplicates are dropped; every
// certificate must be a CA. An empty bundle is an error: it would trust
// nothing and fail every verification in confusing ways.
func NewBundle(roots ...*x509.Certificate) (*Bundle, error) {
	b := &Bundle{pool: x509.NewCertPool()}
	for _, r := range roots {
		if r == nil {
			continue
		}
		if !r.IsCA {
			return nil, fmt.Errorf("bundle: %q is not a CA certificate", r.Subject)
		}
		if b.contains(r) {
			continue
		}
		b.roots = append(b.roots, r)
		b.pool.AddCert(r)
	}
	if len(b.roots) == 0 {
		return nil, errors.New("bundle: no root certificates")
	}
	return b, nil
}

// ParseBundle reads a bundle from concatenated PEM certificates.
func ParseBundle(pemData []byte) (*Bundle, error) {
	certs, err := ParseCertificates(pemData)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return NewBundle(certs...)
}

// Roots returns the roots in the order they were added. The slice is a
// copy; the certificates are shared and must not be modified.
func (b *Bundle) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), b.roots...)
}

// Pool returns the roots as a cert pool for x509.VerifyOptions. Callers must
// not add to it.
func (b *Bundle) Pool() *x509.CertPool { return b.pool }

// PEM returns the roots as concatenated PEM blocks.
func (b *Bundle) PEM() []byte { return EncodeCertificates(b.roots...) }

func (b *Bundle) contains(c *x509.Certificate) bool {
	for _, r := range b.roots {
		if bytes.Equal(r.Raw, c.Raw) {
			return true
		}
	}
	return false
}
