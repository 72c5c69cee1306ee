package ca

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"

	"github.com/meshca/meshca/trust"
)

// DefaultCRLValidity is how long a CRL is valid (NextUpdate - ThisUpdate);
// signers re-sign at half of it and whenever the revocations change.
const DefaultCRLValidity = 24 * time.Hour

// CRLRequest is what SignCRL signs.
type CRLRequest struct {
	// Number is the CRL number; it must grow with every CRL of this
	// issuer. Zero means Now in Unix milliseconds.
	Number *big.Int
	// Serials are the revoked certificates' serial numbers.
	Serials []*big.Int
	// Now is ThisUpdate; zero means time.Now().
	Now time.Time
	// Validity sets NextUpdate = Now + Validity; zero means
	// DefaultCRLValidity. NextUpdate is clamped to the CA's NotAfter.
	Validity time.Duration
}

// SignCRL signs an RFC 5280 CRL (version 2, CRL number, authority key
// identifier) with a's key, verifies it, and returns it with a's chain for
// distribution. It fails with ErrCAExpired when a is not valid at Now.
func (a *Authority) SignCRL(req CRLRequest) (trust.CRL, *x509.RevocationList, error) {
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := a.Certificate
	if now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
		return trust.CRL{}, nil, fmt.Errorf("%w: %q cannot sign a CRL", ErrCAExpired, c.Subject.CommonName)
	}
	if req.Validity <= 0 {
		req.Validity = DefaultCRLValidity
	}
	number := req.Number
	if number == nil || number.Sign() == 0 {
		number = big.NewInt(now.UnixMilli())
	}
	next := now.Add(req.Validity)
	if next.After(c.NotAfter) {
		next = c.NotAfter
	}
	tmpl := &x509.RevocationList{Number: number, ThisUpdate: now.Add(-backdate).UTC(), NextUpdate: next.UTC()}
	for _, s := range req.Serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.UTC()})
	}
	der, err := x509.CreateRevocationList(nil, tmpl, c, a.Signer)
	if err != nil {
		return trust.CRL{}, nil, fmt.Errorf("sign crl: %w", err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return trust.CRL{}, nil, fmt.Errorf("sign crl: parse: %w", err)
	}
	if err := rl.CheckSignatureFrom(c); err != nil {
		return trust.CRL{}, nil, fmt.Errorf("sign crl: verify: %w", err)
	}
	out := trust.CRL{DER: der}
	if !isSelfSigned(c) {
		out.IssuerChain = append(out.IssuerChain, c.Raw)
		for _, p := range a.Chain {
			out.IssuerChain = append(out.IssuerChain, p.Raw)
		}
	}
	return out, rl, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
