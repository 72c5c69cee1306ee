package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/trust"
)

// source is what the SDS and Workload API servers serve from: the agent's
// current identity, and a way to learn that it changed. It is the one seam
// between renewal and serving (Istio calls its equivalent SecretManager), so
// the servers are testable without a CA.
type source interface {
	// Current returns the current snapshot (never nil) and a channel that is
	// closed once a newer snapshot is available. It does not block.
	Current() (*snapshot, <-chan struct{})
}

// snapshot is what the agent serves at one moment: its SVID, if it has one,
// the trust bundle of its own trust domain, and the bundles of the other
// trust domains it knows of (federated meshes and the root's other trust
// domains). It is immutable. Its private key must never be logged: Snapshot
// has no String method that would print it, and callers must not print its
// fields.
type snapshot struct {
	svid   *SVID
	bundle *trust.Bundle
	id     spiffeid.ID
	// domains are the other trust domains' bundles, sorted by name, without
	// the SVID's own trust domain.
	domains []trust.DomainBundle

	svidVersion, bundleVersion, federatedVersion, crlVersion string
	// Encodings computed once per snapshot rather than once per stream.
	chainPEM, keyPEM, bundlePEM []byte
	chainDER, keyDER, bundleDER []byte
	// federated has the DER roots of each of domains, keyed by trust domain
	// ID (spiffe://td); shared by every Workload API response, read only.
	federated map[string][]byte
	// own is the own bundle with the CRLs of every own (non-federated)
	// trust domain: SDS "ROOTCA".
	own rootSet
	// all is the own bundle followed by every other domain's roots, without
	// duplicates, with every CRL: SDS "ALL".
	all rootSet
	// crls are the DER CRLs of every trust domain, without duplicates: the
	// Workload API's crl fields.
	crls [][]byte
	// jwtBundles is the JWKS (JSON) of each trust domain ID; jwtSet holds
	// the same keys for validation, jwtKeys counts them (snapshot_jwt.go).
	jwtBundles map[string][]byte
	jwtSet     *jwtbundle.Set
	jwtKeys    int
	jwtVersion string
	// byDomain is the bundle of each trust domain ID the agent serves over
	// SDS as spiffe://<td>, own included once the SVID is known.
	byDomain map[string]rootSet

	// sdsCache memoizes encoded SDS resources by name: after a rotation,
	// every stream subscribed to a name sends the same bytes.
	sdsMu    sync.Mutex
	sdsCache map[string]*anypb.Any
}

// rootSet is one served bundle with its encodings, and the CRLs served
// with it.
type rootSet struct {
	pem, der []byte
	// crlPEM is the CRLs as concatenated "X509 CRL" PEM blocks; nil when
	// there are none.
	crlPEM  []byte
	version string
}

// newRootSet encodes roots with crls.
func newRootSet(roots []*x509.Certificate, crls [][]byte) rootSet {
	var der []byte
	for _, r := range roots {
		der = append(der, r.Raw...)
	}
	return encodedRootSet(trust.EncodeCertificates(roots...), der, crls)
}

// encodedRootSet is the bundle encoded as rootsPEM and rootsDER, with crls
// (DER). The version covers the roots and the CRLs; without CRLs it is the
// roots' alone.
func encodedRootSet(rootsPEM, rootsDER []byte, crls [][]byte) rootSet {
	rs := rootSet{pem: rootsPEM, der: rootsDER}
	for _, c := range crls {
		rs.crlPEM = append(rs.crlPEM, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c})...)
	}
	rs.version = shortHash(append([][]byte{rootsDER}, crls...)...)
	return rs
}

// crlList collects DER CRLs without duplicates, in the order added.
type crlList struct {
	seen map[string]bool
	ders [][]byte
}

func (l *crlList) add(ders ...[]byte) {
	for _, der := range ders {
		if l.seen == nil {
			l.seen = map[string]bool{}
		}
		if !l.seen[string(der)] {
			l.seen[string(der)] = true
			l.ders = append(l.ders, der)
		}
	}
}

func (l *crlList) addAll(crls []trust.CRL) {
	for _, c := range crls {
		l.add(c.DER)
	}
}

func shortHash(b ...[]byte) string {
	h := sha256.New()
	for _, p := range b {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// newSnapshot builds a snapshot without other trust domains; see
// newFederatedSnapshot.
func newSnapshot(svid *SVID, bundle *trust.Bundle) (*snapshot, error) {
	return newFederatedSnapshot(svid, bundle, nil)
}

// newFederatedSnapshot builds a snapshot. svid may be nil (no certificate
// yet); bundle (the own trust domain's roots) may be nil only when svid is
// nil too. The SVID's leaf must carry exactly one SPIFFE ID, and its key must
// be PKCS#8-encodable. domains are the bundles of other trust domains, each
// named once; an entry for the SVID's own trust domain is dropped, because
// bundle is what the agent trusts for it, but its CRLs are kept. The CRLs of
// domains are served as they are: the caller has verified them (Manager
// does, with trust.VerifyCRL) and keeps one per issuer. Those of own
// (non-federated) domains are served with bundle, every domain's with its
// roots, and all of them with ALL and over the Workload API. The JWT
// authorities of every domain, the own included, are served as they are
// too (verified by the caller) as JWT bundles.
func newFederatedSnapshot(svid *SVID, bundle *trust.Bundle, domains []trust.DomainBundle) (*snapshot, error) {
	s := &snapshot{svid: svid, bundle: bundle}
	if bundle != nil {
		s.bundlePEM = bundle.PEM()
		for _, r := range bundle.Roots() {
			s.bundleDER = append(s.bundleDER, r.Raw...)
		}
		s.bundleVersion = shortHash(s.bundleDER)
	}
	if svid != nil {
		if err := s.setSVID(svid); err != nil {
			return nil, err
		}
	}
	if err := s.setDomains(domains); err != nil {
		return nil, err
	}
	if err := s.setJWTBundles(domains); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *snapshot) setSVID(svid *SVID) error {
	if s.bundle == nil {
		return errors.New("snapshot: an SVID needs a trust bundle")
	}
	if len(svid.Chain) == 0 || len(svid.Chain[0].URIs) != 1 {
		return errors.New("snapshot: the SVID's leaf must carry exactly one URI SAN")
	}
	id, err := spiffeid.FromURI(svid.Chain[0].URIs[0])
	if err != nil {
		return fmt.Errorf("snapshot: leaf URI SAN: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.Key)
	if err != nil {
		return fmt.Errorf("snapshot: encode key: %w", err)
	}
	s.id = id
	s.keyDER = keyDER
	s.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	s.chainPEM = trust.EncodeCertificates(svid.Chain...)
	for _, c := range svid.Chain {
		s.chainDER = append(s.chainDER, c.Raw...)
	}
	s.svidVersion = trust.SerialHex(svid.Chain[0].SerialNumber)
	return nil
}

// setDomains records the other trust domains and computes what is served
// from them. It runs after setSVID, which tells the own trust domain.
func (s *snapshot) setDomains(domains []trust.DomainBundle) error {
	own := s.id.TrustDomain()
	var all []*x509.Certificate
	if s.bundle != nil {
		all = s.bundle.Roots()
	}
	domains = slices.Clone(domains)
	slices.SortFunc(domains, func(x, y trust.DomainBundle) int { return strings.Compare(x.TrustDomain.Name(), y.TrustDomain.Name()) })
	var ownCRLs, allCRLs crlList
	for _, d := range domains {
		if !d.Federated || d.TrustDomain == own {
			ownCRLs.addAll(d.CRLs)
		}
	}
	if s.bundle != nil {
		s.own = encodedRootSet(s.bundlePEM, s.bundleDER, ownCRLs.ders)
	}
	allCRLs.add(ownCRLs.ders...)
	s.byDomain = map[string]rootSet{}
	if !own.IsZero() {
		s.byDomain[own.IDString()] = s.own
	}
	var parts [][]byte
	for _, d := range domains {
		if d.TrustDomain.IsZero() || d.Roots == nil {
			return errors.New("snapshot: a trust domain bundle needs a name and roots")
		}
		if d.TrustDomain == own {
			continue
		}
		key := d.TrustDomain.IDString()
		if _, dup := s.federated[key]; dup {
			return fmt.Errorf("snapshot: trust domain %s listed twice", d.TrustDomain)
		}
		var crls crlList
		crls.addAll(d.CRLs)
		allCRLs.addAll(d.CRLs)
		rs := newRootSet(d.Roots.Roots(), crls.ders)
		if s.federated == nil {
			s.federated = map[string][]byte{}
		}
		s.federated[key] = rs.der
		s.byDomain[key] = rs
		s.domains = append(s.domains, d)
		all = append(all, d.Roots.Roots()...)
		parts = append(parts, []byte(key), rs.der)
	}
	if len(s.domains) > 0 {
		s.federatedVersion = shortHash(parts...)
	}
	if len(all) > 0 {
		b, err := trust.NewBundle(all...)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		s.all = newRootSet(b.Roots(), allCRLs.ders)
	}
	s.crls = allCRLs.ders
	if len(s.crls) > 0 {
		s.crlVersion = shortHash(s.crls...)
	}
	return nil
}

// SVID returns the certificate and key, or nil before the first one. It may
// have expired; see Valid.
func (s *snapshot) SVID() *SVID { return s.svid }

// Bundle returns the own trust domain's bundle, or nil when none is known
// yet.
func (s *snapshot) Bundle() *trust.Bundle { return s.bundle }

// FederatedBundles returns the bundles of the other trust domains, sorted
// by name, without the SVID's own. The slice is a copy.
func (s *snapshot) FederatedBundles() []trust.DomainBundle { return slices.Clone(s.domains) }

// ID returns the SVID's SPIFFE ID; the zero ID when there is no SVID.
func (s *snapshot) ID() spiffeid.ID { return s.id }

// Valid reports whether the snapshot holds a certificate that has not
// expired at now. NotBefore is not checked: issuers backdate it, and a clock
// slightly behind the issuer's must not stop serving.
func (s *snapshot) Valid(now time.Time) bool {
	return s.svid != nil && now.Before(s.svid.Chain[0].NotAfter)
}

// NotAfter returns when the SVID expires; the zero time without one.
func (s *snapshot) NotAfter() time.Time {
	if s.svid == nil {
		return time.Time{}
	}
	return s.svid.Chain[0].NotAfter
}

// SVIDVersion identifies the SVID (its serial number, hex); "" without one.
func (s *snapshot) SVIDVersion() string { return s.svidVersion }

// BundleVersion identifies the own bundle's content (a hash prefix); ""
// without one.
func (s *snapshot) BundleVersion() string { return s.bundleVersion }

// FederatedVersion identifies the other trust domains' bundles (a hash
// prefix over names and roots); "" when there are none.
func (s *snapshot) FederatedVersion() string { return s.federatedVersion }

// CRLs returns the DER CRLs of every trust domain, without duplicates; nil
// when there are none. The slice is a copy; the CRLs must not be modified.
func (s *snapshot) CRLs() [][]byte { return slices.Clone(s.crls) }

// CRLVersion identifies the CRLs served (a hash prefix); "" when there are
// none.
func (s *snapshot) CRLVersion() string { return s.crlVersion }

// cachedSDS returns the encoded resource for name, building it with build
// the first time.
func (s *snapshot) cachedSDS(name string, build func() (*anypb.Any, error)) (*anypb.Any, error) {
	s.sdsMu.Lock()
	defer s.sdsMu.Unlock()
	if a, ok := s.sdsCache[name]; ok {
		return a, nil
	}
	a, err := build()
	if err != nil {
		return nil, err
	}
	if s.sdsCache == nil {
		s.sdsCache = map[string]*anypb.Any{}
	}
	s.sdsCache[name] = a
	return a, nil
}

// publisher holds the current snapshot and tells subscribers when it
// changes. It implements Source; Current is lock-free, so that a thousand
// streams woken by one rotation do not queue on a mutex. The zero value is
// not usable; call newPublisher.
type publisher struct {
	v *watch.Value[*snapshot]
}

var _ source = (*publisher)(nil)

// newPublisher returns a publisher holding an empty snapshot (no SVID, no
// bundle).
func newPublisher() *publisher { return &publisher{v: watch.New(&snapshot{})} }

// Current implements Source.
func (p *publisher) Current() (*snapshot, <-chan struct{}) { return p.v.Load() }

// Publish makes s current and wakes every subscriber, unless s has the same
// SVID, bundles, CRLs and JWT bundles as the current snapshot. It reports whether it did.
func (p *publisher) Publish(s *snapshot) bool {
	return p.v.Update(func(old *snapshot) (*snapshot, bool) {
		same := s.svidVersion == old.svidVersion && s.bundleVersion == old.bundleVersion &&
			s.federatedVersion == old.federatedVersion && s.crlVersion == old.crlVersion && s.jwtVersion == old.jwtVersion
		return s, !same
	})
}
