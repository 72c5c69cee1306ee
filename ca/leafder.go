package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The workload leaf is the certificate meshca signs on every request, and
// x509.CreateCertificate spends about a tenth of the issuer's CPU on
// reflection-driven ASN.1 encoding of it. signLeafDER encodes that one shape
// directly, byte for byte what CreateCertificate produces for the same
// template (TestLeafDERMatchesCreateCertificate), then signs it and verifies
// the signature against the issuing certificate's public key exactly as
// CreateCertificate does. Any other shape goes through CreateCertificate.

var (
	oidECDSAWithSHA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtKeyUsage   = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtBasicCons     = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtAuthorityKey  = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtSubjectAltNam = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidServerAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// leafDERSigner returns the signature algorithm and hash signLeafDER uses
// for a's key, or ok false when a's key is not one it handles (then
// CreateCertificate signs).
func (a *Authority) leafDERSigner() (alg asn1.ObjectIdentifier, hash crypto.Hash, ok bool) {
	pub, isEC := a.Certificate.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !isEC:
		return nil, 0, false
	case pub.Curve == elliptic.P256():
		return oidECDSAWithSHA256, crypto.SHA256, true
	case pub.Curve == elliptic.P384():
		return oidECDSAWithSHA384, crypto.SHA384, true
	}
	return nil, 0, false
}

// leafDERShape reports whether tmpl is the shape signLeafDER encodes: URI
// names only, no subject, digital signature key usage, server and client
// authentication, not a CA.
func leafDERShape(tmpl *x509.Certificate) bool {
	return len(tmpl.DNSNames)+len(tmpl.IPAddresses)+len(tmpl.EmailAddresses) == 0 && len(tmpl.URIs) > 0 &&
		tmpl.KeyUsage == x509.KeyUsageDigitalSignature && tmpl.BasicConstraintsValid && !tmpl.IsCA &&
		len(tmpl.ExtKeyUsage) == 2 && tmpl.ExtKeyUsage[0] == x509.ExtKeyUsageServerAuth &&
		tmpl.ExtKeyUsage[1] == x509.ExtKeyUsageClientAuth
}

// signLeafDER signs tmpl (of leafDERShape) for pub and returns the
// certificate's DER once its signature has verified against a's certificate.
func (a *Authority) signLeafDER(tmpl *x509.Certificate, pub crypto.PublicKey, alg asn1.ObjectIdentifier, hash crypto.Hash) ([]byte, error) {
	tbs, err := a.leafTBS(tmpl, pub, alg)
	if err != nil {
		return nil, err
	}
	var digest []byte
	if hash == crypto.SHA384 {
		d := sha512.Sum384(tbs)
		digest = d[:]
	} else {
		d := sha256.Sum256(tbs)
		digest = d[:]
	}
	sig, err := a.Signer.Sign(rand.Reader, digest, hash)
	if err != nil {
		return nil, err
	}
	// What x509.CreateCertificate checks before returning: a signer that
	// is not the issuing certificate's key, or that faulted, is caught here.
	if !ecdsa.VerifyASN1(a.Certificate.PublicKey.(*ecdsa.PublicKey), digest, sig) {
		return nil, errors.New("x509: signature returned by signer is invalid for the issuing certificate's key")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addAlgorithm(b, alg)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// leafTBS encodes the TBSCertificate of tmpl for pub as
// x509.CreateCertificate would with a as the parent.
func (a *Authority) leafTBS(tmpl *x509.Certificate, pub crypto.PublicKey, alg asn1.ObjectIdentifier) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		b.AddASN1BigInt(tmpl.SerialNumber)
		addAlgorithm(b, alg)
		b.AddBytes(a.Certificate.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, tmpl.NotBefore)
			addTime(b, tmpl.NotAfter)
		})
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // empty subject
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { a.addLeafExtensions(b, tmpl.URIs) })
		})
	})
	return b.Bytes()
}

// addLeafExtensions adds, in CreateCertificate's order, key usage (digital
// signature, critical), extended key usage (server, client), basic
// constraints (not a CA, critical), the authority key identifier when the
// parent has one, and the URI SANs (critical: the subject is empty).
func (a *Authority) addLeafExtensions(b *cryptobyte.Builder, uris []*url.URL) {
	addExtension(b, oidExtKeyUsage, true, func(b *cryptobyte.Builder) {
		// digitalSignature: one bit, so seven unused bits in the byte.
		b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes([]byte{7, 0x80}) })
	})
	addExtension(b, oidExtExtKeyUsage, false, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidServerAuth)
			b.AddASN1ObjectIdentifier(oidClientAuth)
		})
	})
	addExtension(b, oidExtBasicCons, true, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
	})
	if skid := a.Certificate.SubjectKeyId; len(skid) > 0 {
		addExtension(b, oidExtAuthorityKey, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(skid) })
			})
		})
	}
	addExtension(b, oidExtSubjectAltNam, true, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, u := range uris {
				s := u.String()
				for i := range len(s) {
					if s[i] >= 0x80 {
						b.SetError(fmt.Errorf("x509: %q cannot be encoded as an IA5String", s))
						return
					}
				}
				b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
			}
		})
	})
}

func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

func addAlgorithm(b *cryptobyte.Builder, alg asn1.ObjectIdentifier) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(alg) })
}

// addTime encodes t as encoding/asn1 does in a certificate's validity:
// UTCTime from 1950 to 2049, GeneralizedTime otherwise, whole seconds.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}
