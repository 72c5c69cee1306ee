package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"path"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// JWTSignerRequest asks a cluster intermediate for the certificate of a
// JWT-SVID signing key (see trust.JWTAuthority).
type JWTSignerRequest struct {
	// PublicKey of the JWT signing key. Required.
	PublicKey crypto.PublicKey
	// NotAfter ends the certificate; zero means the authority's own
	// NotAfter. It is clamped to the authority's NotAfter.
	NotAfter time.Time
	// Now is the issuance time; zero means time.Now().
	Now time.Time
}

// SignJWTSigner signs the certificate that authenticates a JWT-SVID
// signing key: an end entity (no CA) for digital signatures only, without
// extended key usages, valid within a's certificate, naming
// trust.JWTSignerID of the trust domain and cluster that a names
// (trust.IssuerServerID): the only name trust.VerifyJWTAuthority accepts
// under a. a must be a cluster intermediate. It fails with ErrCAExpired
// when a is not valid at req.Now. Its signature is verified against a's
// key (x509.CreateCertificate does).
func (a *Authority) SignJWTSigner(req JWTSignerRequest) (*x509.Certificate, error) {
	if req.PublicKey == nil {
		return nil, errors.New("jwt signer: public key is required")
	}
	td, cluster, ok := clusterOf(a.Certificate)
	if !ok {
		return nil, errors.New("jwt signer: the authority is no cluster intermediate")
	}
	id, err := trust.JWTSignerID(td, cluster)
	if err != nil {
		return nil, fmt.Errorf("jwt signer: %w", err)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	notAfter := req.NotAfter
	if notAfter.IsZero() || notAfter.After(a.Certificate.NotAfter) {
		notAfter = a.Certificate.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("jwt signer: not after %s is not after now", notAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	if err := a.setValidity(tmpl, now, notAfter.Sub(now)); err != nil {
		return nil, fmt.Errorf("jwt signer: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Certificate, req.PublicKey, a.Signer)
	if err != nil {
		return nil, fmt.Errorf("jwt signer: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("jwt signer: parse: %w", err)
	}
	return cert, nil
}

// clusterOf returns the trust domain and cluster whose issuer c names
// (trust.IssuerServerID); ok is false when it names none.
func clusterOf(c *x509.Certificate) (td spiffeid.TrustDomain, cluster string, ok bool) {
	for _, u := range c.URIs {
		id, err := spiffeid.FromURI(u)
		if err != nil {
			continue
		}
		name := path.Base(id.Path())
		if want, err := trust.IssuerServerID(id.TrustDomain(), name); err == nil && want == id {
			return id.TrustDomain(), name, true
		}
	}
	return spiffeid.TrustDomain{}, "", false
}
