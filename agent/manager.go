package agent

import (
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
)

// fetcher obtains certificates from an issuer. *Client is the real one.
type fetcher interface {
	// Fetch sends a CSR for key, authenticated by token, and returns the
	// verified SVID.
	Fetch(ctx context.Context, key crypto.Signer, token string, ttl time.Duration) (*SVID, error)
	// SetRoots replaces the roots that authenticate the issuer and verify
	// what it returns.
	SetRoots(roots *trust.Bundle) error
}

var _ fetcher = (*Client)(nil)

// crlSetter is an optional capability of a Fetcher: it receives the
// verified CRLs the Manager holds, so that it can refuse an issuer whose
// intermediate the root revoked.
type crlSetter interface {
	SetCRLs(ders [][]byte) error
}

var _ crlSetter = (*Client)(nil)

// managerConfig configures a Manager.
type managerConfig struct {
	// Fetcher talks to the issuer. Required.
	Fetcher fetcher
	// Publisher receives every new snapshot. Required.
	Publisher *publisher
	// TokenFile holds the bearer token; it is read for every renewal,
	// because kubelet rotates projected tokens. Required.
	TokenFile string
	// CABundleFile holds the trusted roots (PEM). It is read at start and
	// for every renewal; a change reaches the issuer connection and every
	// subscriber. Required.
	CABundleFile string
	// KeyType is KeyECP256 or KeyRSA2048; empty means KeyECP256. A new key
	// is generated for every renewal.
	KeyType string
	// TTL is the validity requested; zero means the issuer's default.
	TTL time.Duration
	// SPIFFEID is the identity every certificate must carry. The zero
	// value means the identity of the first certificate obtained: later
	// ones must carry the same (a pod's service account does not change
	// while it runs).
	SPIFFEID spiffeid.ID
	// OutputDir, when set, receives cert.pem, key.pem (0600) and bundle.pem
	// after every renewal; empty means the key never touches the disk.
	OutputDir string
	// Registerer receives the agent's CRL and JWT authority metrics
	// (crlRejectedMetricName, jwtRejectedMetricName),
	// its renewals (renewalsMetricName) and its certificate's expiry
	// (expiryMetricName);
	// nil means no metrics.
	Registerer prometheus.Registerer
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c managerConfig) Validate() error {
	switch {
	case c.Fetcher == nil:
		return errors.New("agent: fetcher is required")
	case c.Publisher == nil:
		return errors.New("agent: publisher is required")
	case c.TokenFile == "":
		return errors.New("agent: token file is required")
	case c.CABundleFile == "":
		return errors.New("agent: CA bundle file is required")
	case c.TTL < 0:
		return fmt.Errorf("agent: ttl %v is negative", c.TTL)
	}
	if _, err := generateKeyFunc(c.KeyType); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// manager keeps the agent's identity: it is the rotation.Renewer that
// fetches each new certificate and publishes it, and it knows whether the
// agent is ready. Renew is called by one goroutine at a time; Ready may be
// called concurrently.
type manager struct {
	cfg      managerConfig
	newKey   func() (crypto.Signer, error)
	metrics  *crlMetrics
	jwtStats *jwtMetrics
	renewals *renewalMetrics
	// tokenFile is managerConfig.TokenFile until SetTokenFile.
	tokenFile atomic.Pointer[string]

	mu          sync.Mutex
	lastErr     error
	lastAttempt time.Time
	// filesHold is the SVID the output files last received, filesErr why
	// the last write failed (nil when it did not).
	filesHold *SVID
	filesErr  error

	// trustMu serializes changes of trust and every Publish, so that a
	// renewal and a bundle update cannot publish out of order.
	trustMu sync.Mutex
	// fileRoots is the CA bundle file as last read.
	fileRoots *trust.Bundle
	// trust is the last trust bundle accepted from the watch; nil before.
	trust *trust.TrustBundle
	// fetchedRoots are roots the fetcher reported for the current SVID
	// beyond those it was configured with (none for *Client).
	fetchedRoots []*x509.Certificate
	// crls are the verified CRLs of trust, by trust domain, newest of each
	// issuer; those past NextUpdate are removed when a snapshot is built.
	crls map[spiffeid.TrustDomain][]*heldCRL
	// jwts are the JWT authorities of trust that the agent accepted, by
	// trust domain, one per key ID; those past their expiry are removed
	// when a snapshot is built.
	jwts map[spiffeid.TrustDomain][]heldJWT
	// crlMarks is the highest CRL number accepted from each CRL issuer
	// (see checkCRLProgress).
	crlMarks map[[32]byte]crlMark
	// crlTimer republishes when the first held CRL or JWT authority
	// expires; nil when none that expires is held. stopped: Stop was called, no timer is armed again.
	crlTimer *time.Timer
	stopped  bool
	// id is the identity of the certificates obtained so far; zero before
	// the first.
	id spiffeid.ID
	// renewNow asks the rotation loop for a renewal at once (capacity 1);
	// revokedSerial is the serial of the last SVID reported revoked, so
	// that each revocation asks once.
	renewNow      chan struct{}
	revokedSerial string
}

var _ rotation.Renewer = (*manager)(nil)

// withDefaults returns c with its zero fields replaced by their defaults.
func (c managerConfig) withDefaults() managerConfig {
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// newManager reads the CA bundle file and publishes it, so that trust
// bundles can be served before the first certificate arrives.
func newManager(cfg managerConfig) (*manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	newKey, _ := generateKeyFunc(cfg.KeyType)
	metrics, err := newCRLMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	jwtStats, err := newJWTMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	renewals, err := newRenewalMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	m := &manager{cfg: cfg, newKey: newKey, metrics: metrics, jwtStats: jwtStats, renewals: renewals, crlMarks: map[[32]byte]crlMark{}, renewNow: make(chan struct{}, 1)}
	m.tokenFile.Store(&cfg.TokenFile)
	bundle, err := m.readBundle()
	if err != nil {
		return nil, err
	}
	m.fileRoots = bundle
	snap, err := newSnapshot(nil, bundle)
	if err != nil {
		return nil, err
	}
	cfg.Publisher.Publish(snap)
	return m, nil
}

// Renew implements rotation.Renewer: read the token and the CA bundle file,
// generate a key, fetch a certificate and publish it with the own trust
// domain's bundle (the file's roots, the watched bundle's own roots and any
// other root the fetcher verified against) and the other trust domains'
// bundles. On failure the current snapshot stays. Errors the issuer will
// repeat (Unauthenticated, PermissionDenied, InvalidArgument) are marked
// rotation.ErrRefused.
func (m *manager) Renew(ctx context.Context) (rotation.Validity, error) {
	v, err := m.renew(ctx)
	m.mu.Lock()
	m.lastErr, m.lastAttempt = err, time.Now()
	m.mu.Unlock()
	m.renewals.renewed(v.NotAfter, err)
	return v, err
}

func (m *manager) renew(ctx context.Context) (rotation.Validity, error) {
	fileBundle, err := m.readBundle()
	if err != nil {
		return rotation.Validity{}, err
	}
	configured, err := m.setFileRoots(fileBundle)
	if err != nil {
		return rotation.Validity{}, err
	}
	token, err := ReadToken(*m.tokenFile.Load())
	if err != nil {
		return rotation.Validity{}, err
	}
	key, err := m.newKey()
	if err != nil {
		return rotation.Validity{}, fmt.Errorf("generate key: %w", err)
	}
	svid, err := m.cfg.Fetcher.Fetch(ctx, key, token, m.cfg.TTL)
	if err != nil {
		return rotation.Validity{}, markRefused(err)
	}
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	id, err := m.checkIdentityLocked(svid.Chain[0])
	if err != nil {
		return rotation.Validity{}, err
	}
	prev, _ := m.cfg.Publisher.Current()
	prevFetched := m.fetchedRoots
	m.fetchedRoots = slices.DeleteFunc(slices.Clone(svid.Roots), func(r *x509.Certificate) bool { return bundleContains(configured, r) })
	snap, _, err := m.publishLocked(svid)
	if err != nil {
		m.fetchedRoots = prevFetched
		return rotation.Validity{}, err
	}
	m.id = id
	select {
	case <-m.renewNow: // asked for the certificate just replaced
	default:
	}
	leaf := svid.Chain[0]
	m.cfg.Logger.Info("certificate obtained", "spiffe_id", snap.ID().String(), "serial", trust.SerialHex(leaf.SerialNumber),
		"not_after", leaf.NotAfter, "bundle_changed", prev.BundleVersion() != snap.BundleVersion())
	return rotation.Validity{NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}, nil
}

// SetTokenFile makes every later renewal read the token from path.
func (m *manager) SetTokenFile(path string) { m.tokenFile.Store(&path) }

// errWrongIdentity reports a certificate from the issuer that does not
// carry the identity the agent expects.
var errWrongIdentity = errors.New("issued certificate carries an unexpected identity")

// checkIdentityLocked returns the SPIFFE ID of leaf, a certificate just
// fetched, or errWrongIdentity when it is not managerConfig.SPIFFEID (or,
// without one, the identity of the certificates obtained before), or when
// its trust domain is not one of the held trust bundle's own. The caller
// holds trustMu.
func (m *manager) checkIdentityLocked(leaf *x509.Certificate) (spiffeid.ID, error) {
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("%w: %d URI SANs", errWrongIdentity, len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", errWrongIdentity, err)
	}
	want := m.cfg.SPIFFEID
	if want.IsZero() {
		want = m.id
	}
	if !want.IsZero() && id != want {
		return spiffeid.ID{}, fmt.Errorf("%w: %s, want %s", errWrongIdentity, id, want)
	}
	if m.trust != nil && !slices.ContainsFunc(m.trust.Domains, func(d trust.DomainBundle) bool {
		return !d.Federated && d.TrustDomain == id.TrustDomain()
	}) {
		return spiffeid.ID{}, fmt.Errorf("%w: %s is not in a trust domain of the trust bundle", errWrongIdentity, id)
	}
	return id, nil
}

// setFileRoots records the CA bundle file's roots and gives the fetcher the
// resulting trust anchors, which it returns.
func (m *manager) setFileRoots(file *trust.Bundle) (*trust.Bundle, error) {
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	m.fileRoots = file
	roots, err := m.anchorsLocked()
	if err != nil {
		return nil, err
	}
	if err := m.cfg.Fetcher.SetRoots(roots); err != nil {
		return nil, err
	}
	return roots, nil
}

// anchorsLocked returns the roots that authenticate the issuer and verify
// what it issues and the bundles it relays: the CA bundle file's and the
// watched bundle's own authorities (meshca's CAs: under an upstream PKI
// not its root, which also vouches for certificates that are not
// meshca's). The caller holds trustMu.
func (m *manager) anchorsLocked() (*trust.Bundle, error) {
	roots := m.fileRoots.Roots()
	if m.trust != nil {
		if own := m.trust.OwnAuthorities(); own != nil {
			roots = append(roots, own.Roots()...)
		}
	}
	b, err := trust.NewBundle(roots...)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	return b, nil
}

// workloadAnchorsLocked returns the own trust domain's roots served to
// workloads (SDS ROOTCA, the Workload API's X.509 bundle, bundle.pem). They
// are anchorsLocked's, except under an upstream PKI (the watched bundle has
// Authorities of its own): then meshca's CAs among them are replaced by the
// bundle's own Roots, the upstream's root, which workloads anchor on as
// relying parties outside the mesh do. Their chains carry meshca's CA and the
// upstream's intermediates up to it. The issuer connection and the bundles
// and CRLs the agent accepts keep trusting anchorsLocked's. The caller holds
// trustMu.
func (m *manager) workloadAnchorsLocked() (*trust.Bundle, error) {
	anchors, err := m.anchorsLocked()
	if err != nil || m.trust == nil || !slices.ContainsFunc(m.trust.Domains, func(d trust.DomainBundle) bool {
		return !d.Federated && d.Authorities != nil
	}) {
		return anchors, err
	}
	own := m.trust.OwnAuthorities()
	roots := slices.DeleteFunc(anchors.Roots(), func(r *x509.Certificate) bool { return bundleContains(own, r) })
	for _, d := range m.trust.Domains {
		if !d.Federated {
			roots = append(roots, d.Roots.Roots()...)
		}
	}
	b, err := trust.NewBundle(roots...)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	return b, nil
}

// publishLocked publishes svid (nil: none yet) with the current trust: its
// Roots become the own trust domain's bundle (workloadAnchorsLocked). It
// returns the snapshot built and whether it differed from the current one.
// The caller holds trustMu.
func (m *manager) publishLocked(svid *SVID) (*snapshot, bool, error) {
	anchors, err := m.workloadAnchorsLocked()
	if err != nil {
		return nil, false, err
	}
	own, err := trust.NewBundle(append(anchors.Roots(), m.fetchedRoots...)...)
	if err != nil {
		return nil, false, fmt.Errorf("trust bundle: %w", err)
	}
	if svid != nil {
		withRoots := *svid
		withRoots.Roots = own.Roots()
		svid = &withRoots
	}
	var domains []trust.DomainBundle
	if m.trust != nil {
		now := time.Now()
		expiry := pruneCRLs(m.crls, now, m.cfg.Logger, m.metrics)
		expiry = earliest(expiry, pruneJWTAuthorities(m.jwts, now, m.cfg.Logger))
		m.armCRLTimerLocked(expiry)
		domains = withJWTAuthorities(withCRLs(m.trust.Domains, m.crls), m.jwts)
	}
	snap, err := newFederatedSnapshot(svid, own, domains)
	if err != nil {
		return nil, false, err
	}
	// The files change before the sockets do, so that whoever sees the new
	// certificate served, or the agent ready, finds it in the files too.
	if prev, _ := m.cfg.Publisher.Current(); snap.SVID() != nil &&
		(prev.SVIDVersion() != snap.SVIDVersion() || prev.BundleVersion() != snap.BundleVersion()) {
		m.writeFiles(snap.SVID())
	}
	return snap, m.cfg.Publisher.Publish(snap), nil
}

// armCRLTimerLocked makes the current SVID be published again at expiry
// (zero: never), so that a CRL whose issuer stopped publishing is no longer
// served once it has expired (a relying party would refuse every
// certificate of that issuer over an expired CRL), and an expired JWT
// authority no longer validates anything. The caller holds trustMu.
func (m *manager) armCRLTimerLocked(expiry time.Time) {
	if m.crlTimer != nil {
		m.crlTimer.Stop()
		m.crlTimer = nil
	}
	if expiry.IsZero() || m.stopped {
		return
	}
	m.crlTimer = time.AfterFunc(time.Until(expiry), func() {
		m.trustMu.Lock()
		defer m.trustMu.Unlock()
		if m.stopped {
			return
		}
		prev, _ := m.cfg.Publisher.Current()
		if _, _, err := m.publishLocked(prev.SVID()); err != nil {
			m.cfg.Logger.Error("dropping expired CRLs failed", "error", err.Error())
		}
	})
}

// Stop releases the timer that drops expired CRLs. Renew and
// SetTrustBundle still work afterwards, but a held CRL is then dropped only
// by them.
func (m *manager) Stop() {
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	m.stopped = true
	m.armCRLTimerLocked(time.Time{})
}

// errStaleBundle reports a trust bundle older than the one held.
var errStaleBundle = errors.New("trust bundle is older than the one held")

// errUntrustedBundle reports a trust bundle that would add trust no root
// the agent trusts vouches for: its signature does not verify, or it is
// unsigned and adds a root or a trust domain.
var errUntrustedBundle = errors.New("trust bundle is not vouched for by a trusted root")

// TrustBundleSequence implements trustUpdater.
func (m *manager) TrustBundleSequence() uint64 {
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	if m.trust == nil {
		return 0
	}
	return m.trust.Sequence
}

// SetTrustBundle implements trustUpdater: b becomes the agent's trust at
// once, unless its sequence is lower than the held one's (errStaleBundle)
// or it is not vouched for (errUntrustedBundle). The issuer only relays
// bundles, so a bundle is accepted when it is signed by a root the agent
// trusts now (the CA bundle file's and the held bundle's own roots), or
// when it is unsigned and adds no trust (see addedTrust); an issuer can
// then at most withdraw trust, never extend it. Its own authorities
// (meshca's CAs), with the CA bundle file's, authenticate the issuer from
// now on (anchorsLocked), and its own roots make the own trust domain's
// bundle (workloadAnchorsLocked); its other trust domains are served as
// federated bundles. The current SVID is published again with them, so that a new
// root reaches Envoy and applications before any issuer uses it. It reports
// whether anything served changed.
//
// CRLs are not covered by the root's signature: issuers add their own to
// the bundle they relay without changing its sequence, so a bundle with
// the held sequence is applied too, and its CRLs replace the held ones.
// Each CRL is checked with trust.VerifyCRL against its trust domain's own
// CAs (trust.DomainBundle.OwnCAs: meshca's, never an upstream PKI's root);
// one that fails is logged, counted (crlRejectedMetricName) and dropped,
// and the rest of b is applied regardless. Of the CRLs of one issuer only
// the one with the highest number is served. A CRL is served until its
// NextUpdate; then the snapshot is published again without it. A bundle
// whose CRLs would go backwards (an older CRL of an issuer than one
// accepted, or a current CRL left out) is refused whole with
// errCRLRollback, errCRLConflict or errCRLDropped; see checkCRLProgress.
//
// The JWT authorities of own trust domains are not covered by the
// signature either: each is checked with trust.VerifyJWTAuthority against
// its trust domain's own CAs, and one that fails is logged, counted
// (jwtRejectedMetricName) and dropped alone; those of federated domains
// are covered by it and taken as they are. Expired ones are dropped, on
// receipt and while held; of several with one key ID one is kept.
func (m *manager) SetTrustBundle(b *trust.TrustBundle) (bool, error) {
	if b == nil {
		return false, errors.New("trust bundle is nil")
	}
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	prevTrust := m.trust
	if prevTrust != nil && b.Sequence < prevTrust.Sequence {
		return false, fmt.Errorf("%w: sequence %d, holding %d", errStaleBundle, b.Sequence, prevTrust.Sequence)
	}
	if err := m.vouchedLocked(b); err != nil {
		return false, err
	}
	if prevTrust.Equal(b) {
		m.trust = b
		return false, nil
	}
	now := time.Now()
	next := verifyCRLs(b, now, m.cfg.Logger, m.metrics)
	if err := checkCRLProgress(m.crlMarks, m.crls, next, b, now); err != nil {
		return false, err
	}
	prevCRLs, prevJWTs := m.crls, m.jwts
	m.trust, m.crls = b, next
	m.jwts = verifyJWTAuthorities(b, now, m.cfg.Logger, m.jwtStats)
	anchors, err := m.anchorsLocked()
	if err == nil {
		err = m.cfg.Fetcher.SetRoots(anchors)
	}
	if cs, ok := m.cfg.Fetcher.(crlSetter); ok && err == nil {
		err = cs.SetCRLs(heldDER(m.crls))
	}
	prev, _ := m.cfg.Publisher.Current()
	var (
		snap    *snapshot
		changed bool
	)
	if err == nil {
		snap, changed, err = m.publishLocked(prev.SVID())
	}
	if err != nil {
		m.trust, m.crls, m.jwts = prevTrust, prevCRLs, prevJWTs
		return false, err
	}
	recordCRLMarks(m.crlMarks, next)
	ownChanged := prev.BundleVersion() != snap.BundleVersion()
	var federated []string
	for _, d := range snap.FederatedBundles() {
		federated = append(federated, d.TrustDomain.Name())
	}
	m.cfg.Logger.Info("trust bundle updated", "sequence", b.Sequence, "own_roots", len(snap.Bundle().Roots()),
		"own_bundle_changed", ownChanged, "trust_domains", federated, "federated_changed", prev.FederatedVersion() != snap.FederatedVersion(),
		"crls", len(snap.CRLs()), "crls_changed", prev.CRLVersion() != snap.CRLVersion(),
		"jwt_authorities", snap.jwtAuthorityCount(), "jwt_authorities_changed", prev.JWTVersion() != snap.JWTVersion())
	m.checkRevokedLocked(snap)
	return changed, nil
}

// RenewNow delivers when the SVID being served has been revoked: a held
// CRL of the CA that signed it lists its serial. The rotation loop then
// renews at once (rotation.Config.RenewNow). It delivers once per revoked
// SVID; a renewal that succeeds first drains it.
func (m *manager) RenewNow() <-chan struct{} { return m.renewNow }

// checkRevokedLocked asks for a renewal at once when a held CRL revokes
// the SVID of snap (if any). The caller holds trustMu.
func (m *manager) checkRevokedLocked(snap *snapshot) {
	svid := snap.SVID()
	if svid == nil {
		return
	}
	leaf := svid.Chain[0]
	serial := trust.SerialHex(leaf.SerialNumber)
	if serial == m.revokedSerial {
		return
	}
	for _, held := range m.crls {
		for _, h := range held {
			if !h.revokes(leaf) {
				continue
			}
			m.revokedSerial = serial
			m.cfg.Logger.Warn("own certificate revoked; renewing now", "serial", serial,
				"spiffe_id", snap.ID().String(), "crl_issuer", h.issuerName, "crl_number", h.number.String())
			select {
			case m.renewNow <- struct{}{}:
			default: // a renewal is already asked for
			}
			return
		}
	}
}

// vouchedLocked checks that b may replace the held trust: signed by a root
// trusted now, or unsigned and adding nothing. The caller holds trustMu.
func (m *manager) vouchedLocked(b *trust.TrustBundle) error {
	trusted, err := m.anchorsLocked()
	if err != nil {
		return err
	}
	if b.IsSigned() {
		if err := b.VerifySignature(trusted, time.Now()); err != nil {
			return fmt.Errorf("%w: sequence %d: %w", errUntrustedBundle, b.Sequence, err)
		}
		return nil
	}
	if m.trust != nil && m.trust.IsSigned() {
		// Once a root vouches for the bundle, only a root may replace it:
		// an unsigned one could remove trust or, with a huge sequence,
		// make every later genuine bundle look stale.
		return fmt.Errorf("%w: unsigned bundle %d after a signed one", errUntrustedBundle, b.Sequence)
	}
	snap, _ := m.cfg.Publisher.Current()
	if why := addedTrust(b, trusted, m.trust, snap.ID().TrustDomain()); why != "" {
		return fmt.Errorf("%w: unsigned bundle %d %s", errUntrustedBundle, b.Sequence, why)
	}
	return nil
}

// addedTrust says what trust the unsigned bundle b would add (empty:
// none), for an agent that trusts the roots trusted, holds the bundle held
// (nil: none) and has an SVID in trust domain own (zero: none yet). Every
// domain of b must be an own domain (not federated) that is own's or one of
// held's own domains, with roots from trusted only. Without own and held
// the agent cannot tell its trust domain yet; then b may name one domain,
// as an issuer's own bundle does.
func addedTrust(b *trust.TrustBundle, trusted *trust.Bundle, held *trust.TrustBundle, own spiffeid.TrustDomain) string {
	known := map[spiffeid.TrustDomain]bool{}
	if !own.IsZero() {
		known[own] = true
	}
	if held != nil {
		for _, d := range held.Domains {
			if !d.Federated {
				known[d.TrustDomain] = true
			}
		}
	}
	for _, d := range b.Domains {
		switch {
		case d.Federated:
			return fmt.Sprintf("adds federated trust domain %s", d.TrustDomain.Name())
		case !known[d.TrustDomain] && (len(known) > 0 || len(b.Domains) > 1):
			return fmt.Sprintf("adds trust domain %s", d.TrustDomain.Name())
		}
		for _, r := range d.Roots.Roots() {
			if !bundleContains(trusted, r) {
				fp := trust.Fingerprint(r)
				return fmt.Sprintf("adds root sha256 %s to %s", hex.EncodeToString(fp[:]), d.TrustDomain.Name())
			}
		}
	}
	return ""
}

func bundleContains(b *trust.Bundle, c *x509.Certificate) bool {
	return slices.ContainsFunc(b.Roots(), c.Equal)
}

// writeFiles writes the optional output files. A failure is logged, not
// returned: the new certificate is valid and is served over the sockets
// regardless, and failing the renewal would only make the loop fetch
// another one. The next renewal or bundle change writes the files again;
// until then Ready reports them (filesReady).
func (m *manager) writeFiles(svid *SVID) {
	if m.cfg.OutputDir == "" {
		return
	}
	err := WriteFiles(m.cfg.OutputDir, svid)
	m.mu.Lock()
	if m.filesErr = err; err == nil {
		m.filesHold = svid
	}
	m.mu.Unlock()
	if err != nil {
		m.cfg.Logger.Error("writing certificate files failed; they are stale until the next renewal or bundle change", "dir", m.cfg.OutputDir, "error", err.Error())
	}
}

// filesReady reports nil unless the agent keeps output files and they
// hold no certificate that is valid at now: a reader that waits for
// readiness (istiod reading its files, say) must find them in place.
func (m *manager) filesReady(now time.Time) error {
	if m.cfg.OutputDir == "" {
		return nil
	}
	m.mu.Lock()
	held, err := m.filesHold, m.filesErr
	m.mu.Unlock()
	switch {
	case held != nil && now.Before(held.Chain[0].NotAfter):
		return nil
	case err != nil:
		return fmt.Errorf("the certificate files in %s are not written: %w", m.cfg.OutputDir, err)
	}
	return fmt.Errorf("the certificate files in %s are not written yet", m.cfg.OutputDir)
}

func (m *manager) readBundle() (*trust.Bundle, error) { return readBundleFile(m.cfg.CABundleFile) }

// markRefused wraps issuer refusals that retrying soon cannot fix with
// rotation.ErrRefused.
func markRefused(err error) error {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return fmt.Errorf("%w: %w", rotation.ErrRefused, err)
	}
	return err
}

// Ready reports nil while the agent holds a certificate that has not
// expired (and its output files hold one, when it keeps them), and
// otherwise an error that says why, including the last renewal failure.
func (m *manager) Ready() error {
	snap, _ := m.cfg.Publisher.Current()
	now := time.Now()
	if snap.Valid(now) {
		return m.filesReady(now)
	}
	m.mu.Lock()
	lastErr, lastAttempt := m.lastErr, m.lastAttempt
	m.mu.Unlock()
	var why string
	if snap.SVID() == nil {
		why = "none yet"
	} else {
		why = fmt.Sprintf("%s (serial %s) expired at %s", snap.ID(), snap.SVIDVersion(), snap.NotAfter().UTC().Format(time.RFC3339))
	}
	switch {
	case lastErr != nil:
		return fmt.Errorf("%s; last renewal attempt at %s failed: %w", why, lastAttempt.UTC().Format(time.RFC3339), lastErr)
	case lastAttempt.IsZero():
		return fmt.Errorf("%s; no renewal attempted yet", why)
	}
	return errors.New(why)
}
