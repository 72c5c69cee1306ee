package ca

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// CRL is a certificate revocation list as it travels with a trust bundle:
// the DER list and the chain of its issuer (nearest first, root excluded;
// empty when a root signed it). It is unverified until VerifyCRL accepts
// it.
type CRL struct {
	DER         []byte
	IssuerChain [][]byte
}

func (c CRL) equal(o CRL) bool {
	return bytes.Equal(c.DER, o.DER) && slices.EqualFunc(c.IssuerChain, o.IssuerChain, bytes.Equal)
}

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
func (a *Authority) SignCRL(req CRLRequest) (CRL, *x509.RevocationList, error) {
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := a.Certificate
	if now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
		return CRL{}, nil, fmt.Errorf("%w: %q cannot sign a CRL", ErrCAExpired, c.Subject.CommonName)
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
		return CRL{}, nil, fmt.Errorf("sign crl: %w", err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return CRL{}, nil, fmt.Errorf("sign crl: parse: %w", err)
	}
	if err := rl.CheckSignatureFrom(c); err != nil {
		return CRL{}, nil, fmt.Errorf("sign crl: verify: %w", err)
	}
	out := CRL{DER: der}
	if !isSelfSigned(c) {
		out.IssuerChain = append(out.IssuerChain, c.Raw)
		for _, p := range a.Chain {
			out.IssuerChain = append(out.IssuerChain, p.Raw)
		}
	}
	return out, rl, nil
}

// Errors of VerifyCRL.
var (
	// ErrCRLInvalid: the CRL or its issuer chain does not parse, or the
	// signature does not verify.
	ErrCRLInvalid = errors.New("invalid CRL")
	// ErrCRLUntrusted: the CRL's issuer does not chain to the roots.
	ErrCRLUntrusted = errors.New("CRL issuer not trusted")
	// ErrCRLStale: NextUpdate has passed (or ThisUpdate is in the future).
	ErrCRLStale = errors.New("CRL is not current")
)

// VerifyCRL parses c and checks it: its issuer is a root of roots or a CA
// chaining to one at now, with the cRLSign usage; its signature verifies;
// ThisUpdate <= now < NextUpdate. It returns the parsed list and the issuer
// certificate.
func VerifyCRL(c CRL, roots *Bundle, now time.Time) (*x509.RevocationList, *x509.Certificate, error) {
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCRLInvalid, err)
	}
	var issuer *x509.Certificate
	if len(c.IssuerChain) == 0 {
		for _, r := range roots.Roots() {
			if bytes.Equal(r.RawSubject, rl.RawIssuer) && rl.CheckSignatureFrom(r) == nil {
				issuer = r
				break
			}
		}
		if issuer == nil {
			return nil, nil, fmt.Errorf("%w: no root of the bundle signed it (issuer %q)", ErrCRLUntrusted, rl.Issuer)
		}
	} else {
		chain := make([]*x509.Certificate, 0, len(c.IssuerChain))
		for i, der := range c.IssuerChain {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: issuer chain %d: %w", ErrCRLInvalid, i, err)
			}
			chain = append(chain, cert)
		}
		issuer = chain[0]
		inters := x509.NewCertPool()
		for _, p := range chain[1:] {
			inters.AddCert(p)
		}
		if !issuer.IsCA {
			return nil, nil, fmt.Errorf("%w: issuer %q is not a CA", ErrCRLUntrusted, issuer.Subject)
		}
		if _, err := issuer.Verify(x509.VerifyOptions{Roots: roots.Pool(), Intermediates: inters, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrCRLUntrusted, err)
		}
		if err := rl.CheckSignatureFrom(issuer); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrCRLInvalid, err)
		}
	}
	if now.Before(rl.ThisUpdate) || rl.NextUpdate.IsZero() || !now.Before(rl.NextUpdate) {
		return nil, nil, fmt.Errorf("%w: valid %s to %s", ErrCRLStale, rl.ThisUpdate.UTC().Format(time.RFC3339), rl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return rl, issuer, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
