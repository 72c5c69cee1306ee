package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TrustBundle is what the root publishes and every issuer and agent
// receives: the roots of each trust domain a workload may meet (the root's
// own trust domains and federated ones), with their CRLs, under a sequence
// number that grows with every change. It is immutable.
type TrustBundle struct {
	// Sequence orders bundles from one root; higher is newer.
	Sequence uint64
	// Domains has one entry per trust domain, sorted by name.
	Domains []DomainBundle
	// ActiveRoot is the SHA-256 of the root that signs new intermediates;
	// zero when unknown.
	ActiveRoot [32]byte
	// RefreshHint suggests how often a poller should ask again. It is
	// advice, not trust, and is not covered by Signature.
	RefreshHint time.Duration
	// Signature is the root's signature over Digest (see SignedMessage), made by the
	// root whose fingerprint is Signer; nil for an unsigned bundle (an
	// issuer's own, without a root service).
	Signature []byte
	// Signer is the Fingerprint of the root that made Signature; zero when
	// unsigned.
	Signer [32]byte
	// CrossSigned are cross certificates between the own roots, as
	// received (see Bundle.WithCrossSigned, which OwnRoots applies: one
	// that does not link two own roots is left out). Like CRLs they are
	// not covered by Signature: each authenticates itself by a root's
	// signature, and it links keys the signed roots already hold.
	CrossSigned []*x509.Certificate
}

// DomainBundle is the trust anchors of one trust domain.
type DomainBundle struct {
	TrustDomain spiffeid.TrustDomain
	// Roots are the trust anchors: chains of the domain's certificates
	// end here. Under an upstream PKI they are the upstream's root.
	Roots *Bundle
	// Authorities are meshca's own CA certificates (the root service's
	// roots), the parents a check that means "signed directly by a meshca
	// root" asks for: admin certificates, the root's serving certificate,
	// issuer credentials, the bundle's signer. Nil means Roots (meshca
	// self-signs its roots); under an upstream PKI they are CAs the
	// upstream issued, which chain to Roots through UpstreamChain. Use
	// OwnCAs rather than reading it.
	Authorities *Bundle
	// UpstreamChain holds the upstream's intermediate CAs between
	// Authorities and Roots, for building chains only: never trusted by
	// themselves. Empty without an upstream, or when the upstream root
	// signs meshca's CAs itself.
	UpstreamChain []*x509.Certificate
	// CRLs are revocation lists issued under Roots, as received: check each
	// with VerifyCRL before use.
	CRLs []CRL
	// Federated marks another mesh's bundle.
	Federated bool
	// JWTAuthorities verify the domain's JWT-SVIDs, as received: for an
	// own domain check each with VerifyJWTAuthority before use.
	JWTAuthorities []JWTAuthority
}

// OwnCAs returns d's Authorities, or its Roots when it has none.
func (d DomainBundle) OwnCAs() *Bundle {
	if d.Authorities != nil {
		return d.Authorities
	}
	return d.Roots
}

// Domain returns the bundle of td, or false.
func (b *TrustBundle) Domain(td spiffeid.TrustDomain) (DomainBundle, bool) {
	for _, d := range b.Domains {
		if d.TrustDomain == td {
			return d, true
		}
	}
	return DomainBundle{}, false
}

// AllRoots returns every root of every domain (own and federated), without
// duplicates, as one Bundle; nil when there are none.
func (b *TrustBundle) AllRoots() *Bundle {
	var all []*x509.Certificate
	for _, d := range b.Domains {
		all = append(all, d.Roots.Roots()...)
	}
	out, err := NewBundle(all...)
	if err != nil {
		return nil
	}
	return out
}

// OwnRoots returns the roots of the non-federated domains (the root CA's
// own roots) with the cross certificates among CrossSigned that link two of
// them, nil when there are none.
func (b *TrustBundle) OwnRoots() *Bundle {
	var own []*x509.Certificate
	for _, d := range b.Domains {
		if !d.Federated {
			own = append(own, d.Roots.Roots()...)
		}
	}
	out, err := NewBundle(own...)
	if err != nil {
		return nil
	}
	return out.WithCrossSigned(b.CrossSigned...)
}

// OwnAuthorities returns meshca's own CA certificates of the non-federated
// domains (DomainBundle.OwnCAs: without an upstream PKI, the same as
// OwnRoots), nil when there are none. It is what a check that means
// "signed directly by a meshca root" trusts.
func (b *TrustBundle) OwnAuthorities() *Bundle {
	var own []*x509.Certificate
	for _, d := range b.Domains {
		if !d.Federated {
			own = append(own, d.OwnCAs().Roots()...)
		}
	}
	out, err := NewBundle(own...)
	if err != nil {
		return nil
	}
	return out
}

// OwnUpstreamChain returns the upstream intermediates of the non-federated
// domains, without duplicates, for building chains from OwnAuthorities to
// OwnRoots.
func (b *TrustBundle) OwnUpstreamChain() []*x509.Certificate {
	var out []*x509.Certificate
	for _, d := range b.Domains {
		for _, c := range d.UpstreamChain {
			if !d.Federated && !slices.ContainsFunc(out, c.Equal) {
				out = append(out, c)
			}
		}
	}
	return out
}

// Fingerprint is the SHA-256 of a certificate's DER, the form roots are
// named by on the wire and in the store.
func Fingerprint(c *x509.Certificate) [32]byte { return sha256.Sum256(c.Raw) }

// Equal reports whether a and b carry the same domains, roots, CRLs, JWT
// authorities, cross certificates and active root, ignoring Sequence,
// RefreshHint and the signature.
func (b *TrustBundle) Equal(o *TrustBundle) bool {
	if b == nil || o == nil {
		return b == o
	}
	if b.ActiveRoot != o.ActiveRoot || len(b.Domains) != len(o.Domains) ||
		!slices.EqualFunc(b.CrossSigned, o.CrossSigned, func(x, y *x509.Certificate) bool { return x.Equal(y) }) {
		return false
	}
	for i := range b.Domains {
		x, y := b.Domains[i], o.Domains[i]
		if x.TrustDomain != y.TrustDomain || x.Federated != y.Federated || !bytes.Equal(x.Roots.PEM(), y.Roots.PEM()) ||
			(x.Authorities == nil) != (y.Authorities == nil) || x.Authorities != nil && !bytes.Equal(x.Authorities.PEM(), y.Authorities.PEM()) ||
			!slices.EqualFunc(x.UpstreamChain, y.UpstreamChain, (*x509.Certificate).Equal) ||
			!slices.EqualFunc(x.CRLs, y.CRLs, CRL.equal) || !slices.EqualFunc(x.JWTAuthorities, y.JWTAuthorities, JWTAuthority.equal) {
			return false
		}
	}
	return true
}
