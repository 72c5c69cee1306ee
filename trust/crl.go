package trust

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
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
