package ca

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.step.sm/crypto/keyutil"
)

// crossPathLen is the path length of a cross certificate: one cluster
// intermediate below it, as below the root it copies. It also stops a chain
// from running through two cross certificates (A by B, then B by C; or old
// → new → old) in every verifier, because a cross certificate is never
// self-issued (CrossSign refuses two roots of one name, and NewRoot gives
// every root its own), so OpenSSL and BoringSSL count it as crypto/x509 does.
const crossPathLen = 1

// CrossRequest asks one root to certify another root's subject and key.
type CrossRequest struct {
	// Subject is the other root: a self-signed CA certificate with a key of
	// its own. Required.
	Subject *x509.Certificate
	// NotAfter, when set, ends the certificate earlier than the two roots
	// do; zero means the earlier of the two roots' NotAfter.
	NotAfter time.Time
	// Now is the issuance time; zero means time.Now().
	Now time.Time
}

// CrossSign signs req.Subject's subject and public key with a's root key: a
// cross certificate, with which a relying party that anchors on a's root
// alone verifies chains ending in req.Subject (and the other way round with
// the certificate req.Subject's key signs for a). The certificate is a CA
// with path length 1, no other extension than the key identifiers, and lies
// within the validity of both roots and before req.NotAfter. a must be a
// root (its own certificate self-signed, no chain above it) whose name
// differs from req.Subject's: a cross certificate between roots of one
// name would be self-issued, which OpenSSL and BoringSSL exempt from path
// length limits (RFC 5280 6.1.4), letting chains run through several
// cross certificates. The result is
// checked before it is returned: signed by a, for req.Subject's subject and
// key.
func (a *Authority) CrossSign(req CrossRequest) (*x509.Certificate, error) {
	s := req.Subject
	switch {
	case s == nil:
		return nil, errors.New("cross certificate: subject root is required")
	case len(a.Chain) != 0 || a.Certificate.CheckSignatureFrom(a.Certificate) != nil:
		return nil, fmt.Errorf("cross certificate: signer %q is not a self-signed root", a.Certificate.Subject)
	case !s.IsCA || !s.BasicConstraintsValid || s.CheckSignatureFrom(s) != nil:
		return nil, fmt.Errorf("cross certificate: subject %q is not a self-signed root", s.Subject)
	case keyutil.Equal(s.PublicKey, a.Certificate.PublicKey):
		return nil, errors.New("cross certificate: subject and signer share one key")
	case bytes.Equal(s.RawSubject, a.Certificate.RawSubject):
		return nil, fmt.Errorf("cross certificate: subject and signer share the name %q; the certificate would be self-issued, "+
			"outside the path length limits of OpenSSL and BoringSSL", s.Subject)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	notBefore := slices.MaxFunc([]time.Time{a.Certificate.NotBefore, s.NotBefore, now.Add(-backdate)}, time.Time.Compare)
	notAfter := slices.MinFunc([]time.Time{a.Certificate.NotAfter, s.NotAfter}, time.Time.Compare)
	if !req.NotAfter.IsZero() && req.NotAfter.Before(notAfter) {
		notAfter = req.NotAfter
	}
	if !notAfter.After(now) || !notAfter.After(notBefore) {
		return nil, fmt.Errorf("%w: no time left for a cross certificate of %q (until %s)", ErrCAExpired, s.Subject,
			notAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		RawSubject:   s.RawSubject,
		SubjectKeyId: s.SubjectKeyId,
		// Set by hand, so that the certificate names the signing root's
		// key whatever x509.CreateCertificate derives (it leaves the
		// identifier out when subject and issuer names are equal).
		AuthorityKeyId:        a.Certificate.SubjectKeyId,
		NotBefore:             notBefore.UTC(),
		NotAfter:              notAfter.UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            crossPathLen,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Certificate, s.PublicKey, a.Signer)
	if err != nil {
		return nil, fmt.Errorf("cross certificate: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("cross certificate: parse: %w", err)
	}
	if !bytes.Equal(cert.RawSubject, s.RawSubject) || !keyutil.Equal(cert.PublicKey, s.PublicKey) ||
		cert.CheckSignatureFrom(a.Certificate) != nil {
		return nil, errors.New("cross certificate: result does not certify the subject root under the signer")
	}
	return cert, nil
}
