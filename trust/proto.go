package trust

import (
	"cmp"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// ToProto encodes b for the wire.
func (b *TrustBundle) ToProto() *meshcav1.Bundle {
	pb := &meshcav1.Bundle{Sequence: b.Sequence, RefreshHintSeconds: int64(b.RefreshHint / time.Second)}
	if b.ActiveRoot != ([32]byte{}) {
		pb.ActiveRootSha256 = b.ActiveRoot[:]
	}
	if len(b.Signature) != 0 || b.Signer != ([32]byte{}) {
		pb.Signature = b.Signature
		pb.SignerSha256 = b.Signer[:]
	}
	for _, c := range b.CrossSigned {
		pb.CrossCertificates = append(pb.CrossCertificates, c.Raw)
	}
	for _, d := range b.Domains {
		td := &meshcav1.TrustDomainBundle{TrustDomain: d.TrustDomain.Name(), Federated: d.Federated}
		for _, c := range d.CRLs {
			td.Crls = append(td.Crls, &meshcav1.CRL{Der: c.DER, IssuerChain: c.IssuerChain})
		}
		for _, r := range d.Roots.Roots() {
			td.X509Authorities = append(td.X509Authorities, r.Raw)
		}
		if d.Authorities != nil {
			td.MeshcaAuthorities = rawDER(d.Authorities.Roots())
			td.UpstreamChain = rawDER(d.UpstreamChain)
		}
		for _, a := range d.JWTAuthorities {
			pa, err := a.ToProto()
			if err != nil {
				continue // a key that cannot be encoded was never decoded either
			}
			td.JwtAuthorities = append(td.JwtAuthorities, pa)
		}
		pb.TrustDomains = append(pb.TrustDomains, td)
	}
	return pb
}

// TrustBundleFromProto decodes and checks a bundle from the wire: valid,
// distinct trust domain names, at least one CA certificate each, at least
// one own (non-federated) domain. CRLs are carried as they are; receivers
// check them against the roots before use.
func TrustBundleFromProto(pb *meshcav1.Bundle) (*TrustBundle, error) {
	if pb == nil {
		return nil, errors.New("trust bundle: empty")
	}
	b := &TrustBundle{Sequence: pb.GetSequence(), RefreshHint: time.Duration(pb.GetRefreshHintSeconds()) * time.Second}
	if a := pb.GetActiveRootSha256(); len(a) != 0 {
		if len(a) != sha256.Size {
			return nil, fmt.Errorf("trust bundle: active root hash has %d bytes, want %d", len(a), sha256.Size)
		}
		copy(b.ActiveRoot[:], a)
	}
	if s := pb.GetSignerSha256(); len(s) != 0 {
		if len(s) != sha256.Size {
			return nil, fmt.Errorf("trust bundle: signer hash has %d bytes, want %d", len(s), sha256.Size)
		}
		copy(b.Signer[:], s)
	}
	if sig := pb.GetSignature(); len(sig) != 0 {
		b.Signature = slices.Clone(sig)
	}
	if (len(b.Signature) == 0) != (b.Signer == [32]byte{}) {
		return nil, errors.New("trust bundle: a signature needs its signer's hash and the other way round")
	}
	for i, der := range pb.GetCrossCertificates() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("trust bundle: cross certificate %d: %w", i, err)
		}
		b.CrossSigned = append(b.CrossSigned, c)
	}
	own := false
	for _, td := range pb.GetTrustDomains() {
		name, err := spiffeid.TrustDomainFromString(td.GetTrustDomain())
		if err != nil {
			return nil, fmt.Errorf("trust bundle: trust domain %q: %w", td.GetTrustDomain(), err)
		}
		if _, dup := b.Domain(name); dup {
			return nil, fmt.Errorf("trust bundle: trust domain %q listed twice", name)
		}
		var certs []*x509.Certificate
		for i, der := range td.GetX509Authorities() {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("trust bundle: %s: authority %d: %w", name, i, err)
			}
			certs = append(certs, c)
		}
		roots, err := NewBundle(certs...)
		if err != nil {
			return nil, fmt.Errorf("trust bundle: %s: %w", name, err)
		}
		own = own || !td.GetFederated()
		authorities, chain, err := parseAuthorities(td)
		if err != nil {
			return nil, fmt.Errorf("trust bundle: %s: %w", name, err)
		}
		var crls []CRL
		for _, c := range td.GetCrls() {
			crls = append(crls, CRL{DER: c.GetDer(), IssuerChain: c.GetIssuerChain()})
		}
		var jwts []JWTAuthority
		for i, pa := range td.GetJwtAuthorities() {
			a, err := JWTAuthorityFromProto(pa)
			if err != nil {
				return nil, fmt.Errorf("trust bundle: %s: JWT authority %d: %w", name, i, err)
			}
			jwts = append(jwts, a)
		}
		b.Domains = append(b.Domains, DomainBundle{TrustDomain: name, Roots: roots, CRLs: crls,
			Federated: td.GetFederated(), JWTAuthorities: jwts, Authorities: authorities, UpstreamChain: chain})
	}
	if !own {
		return nil, errors.New("trust bundle: no trust domain of its own")
	}
	slices.SortFunc(b.Domains, func(x, y DomainBundle) int { return cmp.Compare(x.TrustDomain.Name(), y.TrustDomain.Name()) })
	return b, nil
}

// parseAuthorities decodes a domain's meshca authorities and upstream
// chain: CA certificates each; a chain without authorities is refused.
func parseAuthorities(td *meshcav1.TrustDomainBundle) (*Bundle, []*x509.Certificate, error) {
	parse := func(what string, ders [][]byte) ([]*x509.Certificate, error) {
		var out []*x509.Certificate
		for i, der := range ders {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("%s %d: %w", what, i, err)
			}
			if !c.IsCA {
				return nil, fmt.Errorf("%s %d: %q is not a CA certificate", what, i, c.Subject)
			}
			out = append(out, c)
		}
		return out, nil
	}
	auths, err := parse("meshca authority", td.GetMeshcaAuthorities())
	if err != nil {
		return nil, nil, err
	}
	chain, err := parse("upstream CA", td.GetUpstreamChain())
	if err != nil {
		return nil, nil, err
	}
	if len(auths) == 0 {
		if len(chain) != 0 {
			return nil, nil, errors.New("an upstream chain without meshca authorities")
		}
		return nil, nil, nil
	}
	b, err := NewBundle(auths...)
	if err != nil {
		return nil, nil, err
	}
	return b, chain, nil
}

// ToProto encodes a for the wire.
func (a JWTAuthority) ToProto() (*meshcav1.JWTAuthority, error) {
	der, err := x509.MarshalPKIXPublicKey(a.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("JWT authority %q: %w", a.KeyID, err)
	}
	pa := &meshcav1.JWTAuthority{KeyId: a.KeyID, PublicKey: der, CertificateChain: a.Chain}
	if !a.ExpiresAt.IsZero() {
		pa.ExpiresAtUnix = a.ExpiresAt.Unix()
	}
	return pa, nil
}

// JWTAuthorityFromProto decodes a JWT authority: a key ID and a public key
// it can parse. It does not authenticate it (VerifyJWTAuthority does).
func JWTAuthorityFromProto(pa *meshcav1.JWTAuthority) (JWTAuthority, error) {
	if pa.GetKeyId() == "" {
		return JWTAuthority{}, errors.New("no key ID")
	}
	pub, err := x509.ParsePKIXPublicKey(pa.GetPublicKey())
	if err != nil {
		return JWTAuthority{}, fmt.Errorf("key %q: %w", pa.GetKeyId(), err)
	}
	a := JWTAuthority{KeyID: pa.GetKeyId(), PublicKey: pub, Chain: pa.GetCertificateChain()}
	if s := pa.GetExpiresAtUnix(); s != 0 {
		a.ExpiresAt = time.Unix(s, 0)
	}
	return a, nil
}
