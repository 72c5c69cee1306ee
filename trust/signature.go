package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Errors of VerifySignature; match them with errors.Is.
var (
	// ErrUnsigned means the bundle carries no signature.
	ErrUnsigned = errors.New("trust bundle is not signed")
	// ErrUntrustedSigner means the bundle was signed by a root that is not
	// trusted.
	ErrUntrustedSigner = errors.New("trust bundle is signed by an untrusted root")
	// ErrBadSignature means the signature does not match the bundle's
	// content: it was altered, or the signature is not the signer's.
	ErrBadSignature = errors.New("trust bundle signature does not verify")
)

// digestPrefix separates bundle digests from any other SHA-256 input, and
// versions the encoding.
const digestPrefix = "meshca-bundle-v2\x00"

// Digest returns the SHA-256 of the canonical encoding of everything a
// signature vouches for: Sequence, ActiveRoot and every domain (sorted by
// name) with its name, Federated flag and roots (sorted by bytes, so that
// their order does not matter), its meshca Authorities and UpstreamChain
// when it has Authorities, and a federated domain's JWT authorities
// (an own domain's authenticate themselves by their chains, as CRLs do).
// CRLs are not covered: each is signed by its
// issuer and checked on its own (VerifyCRL), so an issuer can add its own
// to the root's bundle without breaking the root's signature. Every variable-length part
// is length-prefixed, so that no two bundles encode alike. RefreshHint and
// the signature itself are not covered.
func (b *TrustBundle) Digest() []byte {
	var buf bytes.Buffer
	buf.WriteString(digestPrefix)
	buf.Write(binary.BigEndian.AppendUint64(nil, b.Sequence))
	buf.Write(b.ActiveRoot[:])
	domains := slices.Clone(b.Domains)
	slices.SortStableFunc(domains, func(x, y DomainBundle) int { return strings.Compare(x.TrustDomain.Name(), y.TrustDomain.Name()) })
	writeCount(&buf, len(domains))
	for _, d := range domains {
		writeBytes(&buf, []byte(d.TrustDomain.Name()))
		// The flag byte tells what follows the roots: 2 marks a federated
		// domain whose JWT authorities follow, so that bundles without
		// any encode as they did before JWT authorities existed.
		// Bit 4 marks meshca authorities distinct from the roots, whose
		// set and upstream chain follow last, so that a bundle without an
		// upstream PKI encodes as it did before.
		jwts := d.Federated && len(d.JWTAuthorities) > 0
		var flag byte
		switch {
		case jwts:
			flag = 2
		case d.Federated:
			flag = 1
		}
		if d.Authorities != nil {
			flag |= 4
		}
		buf.WriteByte(flag)
		var roots [][]byte
		if d.Roots != nil {
			for _, r := range d.Roots.Roots() {
				roots = append(roots, r.Raw)
			}
		}
		writeSet(&buf, roots)
		if jwts {
			writeSet(&buf, jwtDigestParts(d.JWTAuthorities))
		}
		if d.Authorities != nil {
			writeSet(&buf, rawDER(d.Authorities.Roots()))
			writeSet(&buf, rawDER(d.UpstreamChain))
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	return sum[:]
}

func rawDER(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

func writeCount(buf *bytes.Buffer, n int) {
	buf.Write(binary.BigEndian.AppendUint32(nil, uint32(n)))
}

func writeBytes(buf *bytes.Buffer, p []byte) {
	writeCount(buf, len(p))
	buf.Write(p)
}

// writeSet writes a count and then every element, sorted, length-prefixed.
func writeSet(buf *bytes.Buffer, set [][]byte) {
	set = slices.Clone(set)
	slices.SortFunc(set, bytes.Compare)
	writeCount(buf, len(set))
	for _, p := range set {
		writeBytes(buf, p)
	}
}

// SignedMessage returns what the crypto.Signer of a root with public key
// pub signs for b, and the options to sign it with: b's Digest hashed as the
// key requires (SHA-256 for ECDSA P-256 and RSA PKCS #1 v1.5, SHA-384 for
// P-384, SHA-512 for P-521, the Digest itself for Ed25519).
func (b *TrustBundle) SignedMessage(pub crypto.PublicKey) ([]byte, crypto.SignerOpts, error) {
	opts, err := signatureOpts(pub)
	if err != nil {
		return nil, nil, err
	}
	return signedMessage(b.Digest(), opts), opts, nil
}

// CheckSignatureFrom reports whether sig is the signature of the root key
// pub over b's current Digest. It does not look at b.Signature or b.Signer.
func (b *TrustBundle) CheckSignatureFrom(pub crypto.PublicKey, sig []byte) error {
	return verifyWith(pub, b.Digest(), sig)
}

// IsSigned reports whether b carries a signature.
func (b *TrustBundle) IsSigned() bool { return len(b.Signature) != 0 }

// VerifySignature checks that b was signed by one of trusted's CAs (found
// by b.Signer) and that the signature covers b's current content. trusted
// are meshca's own CAs the receiver already trusts (TrustBundle.
// OwnAuthorities of the last accepted bundle, or configured roots): never
// an upstream PKI's root, which also vouches for certificates that are
// not meshca's. When b has Authorities of its own (an upstream PKI), the
// signer must also chain to b's own roots through its upstream chain.
//
// Trust is in the CA's key: a signer that is not one of trusted but one of
// b's own authorities is accepted when one of trusted, valid at now, holds
// the same public key (signedByTrustedKey) — an upstream PKI renews
// meshca's CA certificate for the same key, and replicas of a standalone
// issuer hold certificates of their own for one shared key. It fails with
// ErrUnsigned, ErrUntrustedSigner (also for a signer that is not valid at
// now) or ErrBadSignature.
func (b *TrustBundle) VerifySignature(trusted *Bundle, now time.Time) error {
	if !b.IsSigned() {
		return ErrUnsigned
	}
	signer := findCert(trusted, b.Signer)
	if signer == nil {
		signer = b.signedByTrustedKey(trusted, now)
	}
	if signer == nil {
		return fmt.Errorf("%w: signer sha256 %s", ErrUntrustedSigner, hex.EncodeToString(b.Signer[:]))
	}
	if now.Before(signer.NotBefore) || !now.Before(signer.NotAfter) {
		return fmt.Errorf("%w: signer sha256 %s is not valid now (valid %s to %s)", ErrUntrustedSigner, hex.EncodeToString(b.Signer[:]),
			signer.NotBefore.UTC().Format(time.RFC3339), signer.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := b.checkSignerChain(signer, now); err != nil {
		return fmt.Errorf("%w: signer sha256 %s: %w", ErrUntrustedSigner, hex.EncodeToString(b.Signer[:]), err)
	}
	if err := b.CheckSignatureFrom(signer.PublicKey, b.Signature); err != nil {
		return fmt.Errorf("%w: signer sha256 %s, sequence %d: %w", ErrBadSignature, hex.EncodeToString(b.Signer[:]), b.Sequence, err)
	}
	return nil
}

// findCert returns the certificate of set with fingerprint fp, or nil.
func findCert(set *Bundle, fp [32]byte) *x509.Certificate {
	if set == nil {
		return nil
	}
	for _, r := range set.Roots() {
		if Fingerprint(r) == fp {
			return r
		}
	}
	return nil
}

// signedByTrustedKey returns b's own authority named by b.Signer when a
// certificate of trusted that is valid at now holds its public key, else
// nil.
func (b *TrustBundle) signedByTrustedKey(trusted *Bundle, now time.Time) *x509.Certificate {
	signer := findCert(b.OwnAuthorities(), b.Signer)
	if signer == nil || trusted == nil {
		return nil
	}
	pub, ok := signer.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil
	}
	for _, r := range trusted.Roots() {
		if pub.Equal(r.PublicKey) && !now.Before(r.NotBefore) && now.Before(r.NotAfter) {
			return signer
		}
	}
	return nil
}

// checkSignerChain requires a signer that chains to b's own roots when b
// separates meshca's authorities from its roots (an upstream PKI).
func (b *TrustBundle) checkSignerChain(signer *x509.Certificate, now time.Time) error {
	separate := false
	for _, d := range b.Domains {
		separate = separate || !d.Federated && d.Authorities != nil
	}
	roots := b.OwnRoots()
	if !separate || roots == nil {
		return nil
	}
	inters := x509.NewCertPool()
	for _, c := range b.OwnUpstreamChain() {
		inters.AddCert(c)
	}
	if _, err := signer.Verify(x509.VerifyOptions{Roots: roots.Pool(), Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("does not chain to the bundle's roots: %w", err)
	}
	return nil
}

// signatureOpts returns the signer options for a root key.
func signatureOpts(pub crypto.PublicKey) (crypto.SignerOpts, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return crypto.SHA256, nil
		case elliptic.P384():
			return crypto.SHA384, nil
		case elliptic.P521():
			return crypto.SHA512, nil
		}
		return nil, fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		return crypto.SHA256, nil
	case ed25519.PublicKey:
		return crypto.Hash(0), nil
	}
	return nil, fmt.Errorf("unsupported public key %T", pub)
}

// signedMessage is what Signer.Sign receives for digest: its hash under
// opts, or the digest itself for pure Ed25519.
func signedMessage(digest []byte, opts crypto.SignerOpts) []byte {
	h := opts.HashFunc()
	if h == 0 {
		return digest
	}
	hh := h.New()
	hh.Write(digest)
	return hh.Sum(nil)
}

func verifyWith(pub crypto.PublicKey, digest, sig []byte) error {
	opts, err := signatureOpts(pub)
	if err != nil {
		return err
	}
	msg := signedMessage(digest, opts)
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, msg, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, opts.HashFunc(), msg, sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, msg, sig)
	}
	if !ok {
		return errors.New("invalid signature")
	}
	return nil
}

// jwtDigestParts encodes each JWT authority for Digest: key ID, PKIX key
// and expiry, each length-prefixed. A key that cannot be encoded
// contributes its ID alone and fails verification elsewhere.
func jwtDigestParts(as []JWTAuthority) [][]byte {
	parts := make([][]byte, 0, len(as))
	for _, a := range as {
		var p bytes.Buffer
		writeBytes(&p, []byte(a.KeyID))
		der, _ := x509.MarshalPKIXPublicKey(a.PublicKey)
		writeBytes(&p, der)
		var exp int64
		if !a.ExpiresAt.IsZero() {
			exp = a.ExpiresAt.Unix()
		}
		p.Write(binary.BigEndian.AppendUint64(nil, uint64(exp)))
		parts = append(parts, p.Bytes())
	}
	return parts
}
