package ca

import (
	"bytes"
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
	// Signature is the root's signature over Digest (see Sign), made by the
	// root whose fingerprint is Signer; nil for an unsigned bundle (an
	// issuer's own, without a root service).
	Signature []byte
	// Signer is the Fingerprint of the root that made Signature; zero when
	// unsigned.
	Signer [32]byte
}

// DomainBundle is the trust anchors of one trust domain.
type DomainBundle struct {
	TrustDomain spiffeid.TrustDomain
	Roots       *Bundle
	// CRLs are revocation lists issued under Roots, as received: check each
	// with VerifyCRL before use.
	CRLs []CRL
	// Federated marks another mesh's bundle.
	Federated bool
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
// own roots), nil when there are none.
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
	return out
}

// Fingerprint is the SHA-256 of a certificate's DER, the form roots are
// named by on the wire and in the store.
func Fingerprint(c *x509.Certificate) [32]byte { return sha256.Sum256(c.Raw) }

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
	for _, d := range b.Domains {
		td := &meshcav1.TrustDomainBundle{TrustDomain: d.TrustDomain.Name(), Federated: d.Federated}
		for _, c := range d.CRLs {
			td.Crls = append(td.Crls, &meshcav1.CRL{Der: c.DER, IssuerChain: c.IssuerChain})
		}
		for _, r := range d.Roots.Roots() {
			td.X509Authorities = append(td.X509Authorities, r.Raw)
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
		var crls []CRL
		for _, c := range td.GetCrls() {
			crls = append(crls, CRL{DER: c.GetDer(), IssuerChain: c.GetIssuerChain()})
		}
		b.Domains = append(b.Domains, DomainBundle{TrustDomain: name, Roots: roots, CRLs: crls, Federated: td.GetFederated()})
	}
	if !own {
		return nil, errors.New("trust bundle: no trust domain of its own")
	}
	slices.SortFunc(b.Domains, func(x, y DomainBundle) int { return cmp.Compare(x.TrustDomain.Name(), y.TrustDomain.Name()) })
	return b, nil
}

// Equal reports whether a and b carry the same domains, roots, CRLs and
// active root, ignoring Sequence, RefreshHint and the signature.
func (b *TrustBundle) Equal(o *TrustBundle) bool {
	if b == nil || o == nil {
		return b == o
	}
	if b.ActiveRoot != o.ActiveRoot || len(b.Domains) != len(o.Domains) {
		return false
	}
	for i := range b.Domains {
		x, y := b.Domains[i], o.Domains[i]
		if x.TrustDomain != y.TrustDomain || x.Federated != y.Federated || !bytes.Equal(x.Roots.PEM(), y.Roots.PEM()) ||
			!slices.EqualFunc(x.CRLs, y.CRLs, CRL.equal) {
			return false
		}
	}
	return true
}
