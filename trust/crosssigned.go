package trust

import (
	"bytes"
	"crypto/x509"
	"slices"
)

// CrossCert is a cross certificate between two roots of a Bundle: the
// subject and public key of one root (Subject), signed by another (Issuer).
// With it, a relying party that anchors on Issuer alone verifies chains
// that end in Subject; the root service mints one each way between an old
// and a new root during a rotation.
type CrossCert struct {
	Certificate     *x509.Certificate
	Subject, Issuer *x509.Certificate
}

// WithCrossSigned returns a bundle with b's roots and the certificates of
// certs that link two of them: a CA certificate carrying the subject and
// public key of one root, its signature made by another root's key. Any
// other certificate is left out, so that a cross certificate never adds a
// key the bundle does not already trust. Validity is not judged here: a
// user picks the links valid when it needs them.
func (b *Bundle) WithCrossSigned(certs ...*x509.Certificate) *Bundle {
	out := &Bundle{roots: b.roots, pool: b.pool, cross: slices.Clone(b.cross)}
	for _, c := range certs {
		if c == nil || !c.IsCA || !c.BasicConstraintsValid ||
			slices.ContainsFunc(out.cross, func(x CrossCert) bool { return bytes.Equal(x.Certificate.Raw, c.Raw) }) {
			continue
		}
		subject := b.rootWithKeyOf(c)
		if subject == nil {
			continue
		}
		for _, r := range b.roots {
			if r != subject && !samePublicKey(r, subject) && bytes.Equal(c.RawIssuer, r.RawSubject) && c.CheckSignatureFrom(r) == nil {
				out.cross = append(out.cross, CrossCert{Certificate: c, Subject: subject, Issuer: r})
				break
			}
		}
	}
	return out
}

// CrossSigned returns the bundle's cross certificates (see WithCrossSigned).
func (b *Bundle) CrossSigned() []CrossCert { return slices.Clone(b.cross) }

// rootWithKeyOf returns the root whose subject and public key c carries.
func (b *Bundle) rootWithKeyOf(c *x509.Certificate) *x509.Certificate {
	for _, r := range b.roots {
		if bytes.Equal(r.RawSubject, c.RawSubject) && samePublicKey(r, c) {
			return r
		}
	}
	return nil
}

func samePublicKey(a, b *x509.Certificate) bool {
	return bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}
