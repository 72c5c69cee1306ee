package root

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// Root is the root CA service: the roots, the published trust bundle and
// the signing operations behind the gRPC services. It is safe for
// concurrent use.
type Root struct {
	cfg     Config
	log     *slog.Logger
	metrics *expiryMetrics
	reuse   *reuseCounter
	service *serviceMetrics
	pub     publisher
	// limits bound Serve's connections, streams and bundle watches.
	limits *grpclimit.Limits

	// mu serializes re-evaluation and root creation, and guards the fields
	// below it.
	mu       sync.Mutex
	statuses []RootStatus
	// lastUse is the latest NotAfter of the intermediates under each root,
	// by fingerprint, at the last re-evaluation.
	lastUse map[[32]byte]time.Time
	// domains are the own trust domains: configured, added since start,
	// and found in the store at the last re-evaluation.
	domains, storeDomains map[spiffeid.TrustDomain]bool
	active                *ca.Authority
	warned                map[[32]byte]time.Time
	// revs is the deny-list at the last re-evaluation (or Revoke call);
	// revsAt is when it was last read from the store.
	revs   revocations
	revsAt time.Time
	// rootCRLs are the root CRLs by root fingerprint, crlErrs the last
	// signing failure of each (logged once).
	rootCRLs map[[32]byte]*rootCRL
	crlErrs  map[[32]byte]string
	// issuerCRLs are the CRLs issuers published, by the serial of the
	// intermediate that signed them; in memory only.
	issuerCRLs map[string]issuerCRL
	// jwtAuthorities are the JWT authorities issuers published, by key ID
	// (jwtauthorities.go).
	jwtAuthorities map[string]jwtAuthority
	// leader is whether this replica held the leader lease at the last
	// check (see leadLocked); storedCRLs are the root CRLs in the store at
	// the last re-evaluation, by root fingerprint (hex).
	leader     bool
	storedCRLs map[string]store.RootCRL

	state atomic.Pointer[state]

	// addMu serializes cluster registrations.
	addMu sync.Mutex
	// replicaMu serializes the admission of an issuer replica with the
	// recording of its new lineage (replicas.go).
	replicaMu sync.Mutex

	keysMu  sync.Mutex
	signers map[string]crypto.Signer

	// upstreamRetry delays the next automatic rotation after a failed
	// request to the upstream PKI; pendingKey is the key that request was
	// for. Both are guarded by mu.
	upstreamRetry upstreamRetry
	pendingKey    *pendingKey

	// leaseMu guards lease, the held leader lease (nil: none).
	leaseMu sync.Mutex
	lease   store.Lease
}

// state is what request handlers read: one consistent view of the roots.
type state struct {
	// statuses are all recorded roots, oldest first, with their state.
	statuses []RootStatus
	// active signs new intermediates and credentials; nil when no root may
	// sign (then activeFP may still name the root that should).
	active   *ca.Authority
	activeFP [32]byte
	// clientCAs are all recorded roots that have not expired: the anchors
	// of issuer credentials. Under an upstream PKI they are meshca's own
	// CAs, never the upstream's root, which also issues certificates that
	// are not meshca's.
	clientCAs *x509.CertPool
	bundle    *trust.TrustBundle
	// revoked are the revoked cluster names; never modified.
	revoked map[string]bool
	// revokedSerials and revokedIDs are the other serial and SPIFFE ID
	// revocations, as of revsAt (zero: never read); never modified.
	revokedSerials map[string]store.Revocation
	revokedIDs     map[string]bool
	revsAt         time.Time
	// rootCRLs are the current root CRLs.
	rootCRLs []trust.CRL
	// crossUntil is the earliest end of the published cross certificates
	// that certify the active root under a newer one; zero when there are
	// none. Intermediates the active root signs end by then, so that
	// nothing under it outlives the trust those certificates extend.
	crossUntil time.Time
}

// New loads the roots from cfg.Store, creates the first root when there is
// none (active at once), and publishes the first bundle. Call Run to keep
// the state current and Close when done.
func New(ctx context.Context, cfg Config) (*Root, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Root{
		cfg:          cfg,
		log:          cfg.Logger,
		domains:      map[spiffeid.TrustDomain]bool{},
		storeDomains: map[spiffeid.TrustDomain]bool{},
		warned:       map[[32]byte]time.Time{},
		signers:      map[string]crypto.Signer{},
		revs:         newRevocations(),
		rootCRLs:     map[[32]byte]*rootCRL{},
		crlErrs:      map[[32]byte]string{},
		issuerCRLs:   map[string]issuerCRL{},

		jwtAuthorities: map[string]jwtAuthority{},
	}
	for _, name := range cfg.TrustDomains {
		r.domains[spiffeid.RequireTrustDomainFromString(name)] = true
	}
	m, err := newExpiryMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("root server: %w", err)
	}
	r.metrics = m
	if r.reuse, err = newReuseCounter(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("root server: %w", err)
	}
	if r.service, err = newServiceMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("root server: %w", err)
	}
	if r.limits, err = grpclimit.New(cfg.Limits); err != nil {
		return nil, fmt.Errorf("root server: %w", err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	roots, err := cfg.Store.Roots(ctx)
	if err != nil {
		return nil, fmt.Errorf("root server: list roots: %w", err)
	}
	if err := r.firstRootLocked(ctx, roots); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("root server: first root: %w", err)
	}
	if err := r.refreshLocked(ctx); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("root server: %w", err)
	}
	return r, nil
}

// firstRootLocked creates or adopts (Config.Adopt) the first root when the
// store holds none; with roots in the store it only checks that an
// adopted root is one of them.
func (r *Root) firstRootLocked(ctx context.Context, roots []store.Root) error {
	switch {
	case len(roots) != 0 && r.cfg.Adopt != nil:
		return checkAdoptedAmong(r.cfg.Adopt, roots)
	case len(roots) != 0:
		return nil
	case !r.leadLocked(ctx):
		return errNotLeader
	case r.cfg.Adopt != nil:
		rec, err := r.adoptRootLocked(ctx)
		if err != nil {
			return err
		}
		r.log.InfoContext(ctx, "adopted the first root", "sha256", fingerprintHex(rec.Cert), "subject", rec.Cert.Subject.String(),
			"key", rec.KeyRef, "from", r.cfg.Adopt.CertFile)
		return nil
	}
	rec, err := r.createRootLocked(ctx, 0, "system:root-init", "")
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "created the first root", "sha256", fingerprintHex(rec.Cert), "key", rec.KeyRef)
	return nil
}

// Current returns the published bundle (never nil) and a channel that is
// closed when a newer one is published.
func (r *Root) Current() (*trust.TrustBundle, <-chan struct{}) { return r.pub.current() }

// Roots returns every recorded root with its state at the last
// re-evaluation, oldest first.
func (r *Root) Roots() []RootStatus { return slices.Clone(r.state.Load().statuses) }

// Run re-evaluates the roots every Config.Tick and whenever the federated
// bundles change, until ctx ends; it then returns nil. Failures are logged
// and retried at the next tick.
func (r *Root) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		var fed <-chan struct{}
		if r.cfg.Federated != nil {
			fed = r.cfg.Federated.Changed()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-fed:
		}
		if err := r.refresh(ctx); err != nil && ctx.Err() == nil {
			r.log.ErrorContext(ctx, "re-evaluate roots", "error", err)
		}
	}
}

// Close closes the root keys that need it (Vault clients). Call it after
// Run, Serve and ServeAdmin have returned.
func (r *Root) Close() error {
	r.releaseLease()
	r.keysMu.Lock()
	defer r.keysMu.Unlock()
	var errs []error
	for ref, s := range r.signers {
		if c, ok := s.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close key %s: %w", ref, err))
			}
		}
		delete(r.signers, ref)
	}
	return errors.Join(errs...)
}

// refresh re-reads the store, decides the state of every root at now,
// rotates automatically when due, and publishes the bundle if it changed.
func (r *Root) refresh(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refreshLocked(ctx)
}

func (r *Root) refreshLocked(ctx context.Context) error {
	lead := r.leadLocked(ctx)
	if err := r.loadLocked(ctx); err != nil {
		return err
	}
	now := r.cfg.Now()
	if r.cfg.autoRotate() && lead && shouldRotate(r.statuses, now) && r.rotationDue(now) {
		rec, err := r.createRootLocked(ctx, r.cfg.PropagationDelay, "system:auto-rotate", "")
		switch {
		case err != nil && r.cfg.Upstream != nil:
			r.rotationFailedLocked(ctx, now, err)
		case err != nil:
			return fmt.Errorf("automatic root rotation: %w", err)
		default:
			r.upstreamRetry = upstreamRetry{}
			r.log.InfoContext(ctx, "rotated the root automatically", "sha256", fingerprintHex(rec.Cert),
				"activate_at", rec.ActivateAt)
			if err := r.loadLocked(ctx); err != nil {
				return err
			}
		}
	}
	r.alarmLocked(ctx, now)
	return nil
}

// loadLocked reads roots, intermediates and revocations, decides the root
// states and publishes.
func (r *Root) loadLocked(ctx context.Context) error {
	now := r.cfg.Now()
	rows, err := r.cfg.Store.Roots(ctx)
	if err != nil {
		return fmt.Errorf("%w: list roots: %w", grpcx.ErrUnavailable, err)
	}
	recs := make([]RootRecord, 0, len(rows))
	for _, row := range rows {
		rec, err := parseRootRow(row)
		if err != nil {
			return err
		}
		recs = append(recs, rec)
	}
	// The store orders by AddedAt with second precision; the order that
	// decides which root is newest is the activation time.
	slices.SortStableFunc(recs, func(a, b RootRecord) int {
		return cmp.Or(a.ActivateAt.Compare(b.ActivateAt), a.AddedAt.Compare(b.AddedAt),
			a.Cert.NotBefore.Compare(b.Cert.NotBefore))
	})
	inters, err := r.cfg.Store.Intermediates(ctx, store.IntermediateFilter{ActiveAt: now})
	if err != nil {
		return fmt.Errorf("%w: list intermediates: %w", grpcx.ErrUnavailable, err)
	}
	lastUse := map[[32]byte]time.Time{}
	domains := map[spiffeid.TrustDomain]bool{}
	newest := map[string]store.Intermediate{}
	for _, in := range inters {
		var fp [32]byte
		if b, err := hex.DecodeString(in.RootFingerprint); err == nil && len(b) == len(fp) {
			copy(fp[:], b)
			if in.NotAfter.After(lastUse[fp]) {
				lastUse[fp] = in.NotAfter
			}
		}
		if td, err := spiffeid.TrustDomainFromString(in.TrustDomain); err == nil {
			domains[td] = true
		}
		if in.NotAfter.After(newest[in.Cluster].NotAfter) {
			newest[in.Cluster] = in
		}
	}
	if lister, ok := r.cfg.Store.(ClusterLister); ok {
		clusters, err := lister.Clusters(ctx)
		if err != nil {
			return fmt.Errorf("%w: list clusters: %w", grpcx.ErrUnavailable, err)
		}
		for _, c := range clusters {
			if td, err := spiffeid.TrustDomainFromString(c.TrustDomain); err == nil {
				domains[td] = true
			}
		}
	}
	revs, err := r.loadRevocations(ctx, now, inters)
	if err != nil {
		return err
	}
	if err := r.loadStoredCRLsLocked(ctx); err != nil {
		return err
	}
	r.revs, r.revsAt = revs, now
	r.statuses, r.lastUse = RootStates(recs, lastUse, now), lastUse
	r.mergeStoredIssuerCRLsLocked(ctx, now, inters)
	r.mergeStoredJWTAuthoritiesLocked(ctx, now, inters)
	r.storeDomains = domains
	r.loadActiveLocked(ctx)
	r.metrics.set(r.statuses, newest)
	for cluster := range newest {
		r.reuse.known(cluster)
	}
	r.publishLocked(ctx, now)
	return nil
}

// loadActiveLocked makes r.active the authority of the active root, loading
// its key if it changed. A key that cannot be loaded leaves r.active nil
// (signing fails as unavailable) and is retried at the next re-evaluation.
func (r *Root) loadActiveLocked(ctx context.Context) {
	i := slices.IndexFunc(r.statuses, func(s RootStatus) bool { return s.State == RootActive })
	if i < 0 {
		r.active = nil
		return
	}
	rec := r.statuses[i].RootRecord
	if r.active != nil && bytes.Equal(r.active.Certificate.Raw, rec.Cert.Raw) {
		return
	}
	r.active = nil
	signer, err := r.signer(ctx, rec.KeyRef)
	if err == nil {
		r.active, err = ca.NewAuthority(rec.Cert, signer, rec.Chain...)
	}
	if err != nil {
		r.log.ErrorContext(ctx, "cannot load the active root's key", "sha256", fingerprintHex(rec.Cert),
			"key", rec.KeyRef, "error", err)
	}
}

// publishLocked builds the bundle from the current statuses, domains,
// CRLs and JWT authorities (re-signing the root CRLs when due), publishes it if it differs from
// the current one, and stores the state.
func (r *Root) publishLocked(ctx context.Context, now time.Time) {
	r.signRootCRLsLocked(ctx, now)
	r.pruneIssuerCRLsLocked(ctx, now)
	r.pruneJWTAuthoritiesLocked(ctx, now)
	st := &state{statuses: r.statuses, active: r.active, clientCAs: x509.NewCertPool(), revoked: r.revs.clusters,
		revokedSerials: r.revs.serials, revokedIDs: r.revs.ids, revsAt: r.revsAt}
	for _, s := range r.statuses {
		if c := r.rootCRLs[trust.Fingerprint(s.Cert)]; c != nil {
			st.rootCRLs = append(st.rootCRLs, c.crl)
		}
	}
	var inBundle, anchors, chain []*x509.Certificate
	for _, s := range r.statuses {
		if s.State.InBundle() {
			inBundle = append(inBundle, s.Cert)
			anchors = append(anchors, s.anchor())
			chain = append(chain, s.Chain...)
		}
		if s.State == RootActive {
			st.activeFP = trust.Fingerprint(s.Cert)
		}
		if now.Before(s.Cert.NotAfter) {
			st.clientCAs.AddCert(s.Cert)
		}
	}
	b := &trust.TrustBundle{ActiveRoot: st.activeFP, RefreshHint: r.cfg.RefreshHint}
	own := map[spiffeid.TrustDomain]bool{}
	if tmpl, err := ownDomain(inBundle, anchors, chain); err == nil {
		if roots, err := trust.NewBundle(inBundle...); err == nil {
			b.CrossSigned, st.crossUntil = crossSignedLocked(r.statuses, roots, st.activeFP, now)
		}
		for _, set := range []map[spiffeid.TrustDomain]bool{r.domains, r.storeDomains} {
			for td := range set {
				if !own[td] {
					own[td] = true
					d := tmpl
					d.TrustDomain, d.CRLs, d.JWTAuthorities = td, r.domainCRLsLocked(td), r.domainJWTAuthoritiesLocked(td)
					b.Domains = append(b.Domains, d)
				}
			}
		}
	}
	if r.cfg.Federated != nil {
		for _, d := range r.cfg.Federated.Domains() {
			if own[d.TrustDomain] || d.Roots == nil || d.TrustDomain.IsZero() {
				continue
			}
			d.Federated = true
			own[d.TrustDomain] = true
			b.Domains = append(b.Domains, d)
		}
	}
	slices.SortFunc(b.Domains, func(x, y trust.DomainBundle) int { return cmp.Compare(x.TrustDomain.Name(), y.TrustDomain.Name()) })
	prev, _ := r.pub.current()
	signer := r.bundleSignerLocked(ctx, prev, now)
	var err error
	st.bundle, err = r.pub.publish(b, now, func(nb *trust.TrustBundle) error {
		if signer == nil {
			return errors.New("no root key to sign with")
		}
		return ca.SignTrustBundle(nb, signer.Signer, signer.Certificate)
	})
	switch {
	case err != nil && st.bundle == b:
		r.log.WarnContext(ctx, "published an unsigned trust bundle: no root can sign it; issuers and agents ignore it until a signed one follows",
			"sequence", b.Sequence, "error", err.Error())
	case err != nil:
		r.log.WarnContext(ctx, "trust bundle changed but cannot be signed; still publishing the last signed one, retrying at the next re-evaluation",
			"sequence", st.bundle.Sequence, "error", err.Error())
	case st.bundle == b:
		r.log.InfoContext(ctx, "trust bundle published", "sequence", b.Sequence, "trust_domains", len(b.Domains),
			"signer_sha256", hex.EncodeToString(b.Signer[:]))
	}
	r.service.setSequence(st.bundle.Sequence)
	r.state.Store(st)
}

// bundleSignerLocked returns the root that signs a bundle replacing prev
// (nil: none yet): the active root, so that receivers follow a rotation on
// the signature of the root they were told about in advance. Receivers
// accept only a signer they already trust, so when prev's own roots lack
// the active root (it became active without being published as prepared
// first), the root that signed prev signs instead, while it is still
// recorded, unexpired and its key loads. It returns nil when no root can
// sign.
func (r *Root) bundleSignerLocked(ctx context.Context, prev *trust.TrustBundle, now time.Time) *ca.Authority {
	if r.active == nil || prev == nil || !prev.IsSigned() || prev.Signer == trust.Fingerprint(r.active.Certificate) {
		return r.active
	}
	if own := prev.OwnAuthorities(); own != nil && slices.ContainsFunc(own.Roots(), r.active.Certificate.Equal) {
		return r.active
	}
	for _, s := range r.statuses {
		if trust.Fingerprint(s.Cert) != prev.Signer || !now.Before(s.Cert.NotAfter) {
			continue
		}
		key, err := r.signer(ctx, s.KeyRef)
		if err != nil {
			break
		}
		if a, err := ca.NewAuthority(s.Cert, key, s.Chain...); err == nil {
			return a
		}
	}
	return r.active
}

// RootCRLs returns the current CRLs of the in-bundle roots, for the admin
// API over mutual TLS.
func (r *Root) RootCRLs() []trust.CRL { return r.state.Load().rootCRLs }

// addDomain makes td one of the bundle's own trust domains, publishing at
// once without reading the store.
func (r *Root) addDomain(ctx context.Context, td spiffeid.TrustDomain) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.domains[td] || r.storeDomains[td] {
		return
	}
	r.domains[td] = true
	r.publishLocked(ctx, r.cfg.Now())
}

// signer returns the key named by ref, loading it once.
func (r *Root) signer(ctx context.Context, ref string) (crypto.Signer, error) {
	r.keysMu.Lock()
	defer r.keysMu.Unlock()
	if s, ok := r.signers[ref]; ok {
		return s, nil
	}
	s, err := r.cfg.Keys.Load(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("%w: load key %s: %w", grpcx.ErrUnavailable, ref, err)
	}
	s = r.service.timed(s)
	r.signers[ref] = s
	return s, nil
}

// createRootLocked creates a key and a root for it (self-signed, or
// issued by Config.Upstream) and records it, active after delay. note,
// when set, ends the audit event's detail. A failed attempt keeps the key
// for the next one.
func (r *Root) createRootLocked(ctx context.Context, delay time.Duration, actor, note string) (RootRecord, error) {
	ref, signer, err := r.newRootKeyLocked(ctx)
	if err != nil {
		return RootRecord{}, err
	}
	now := r.cfg.Now()
	rec, err := r.newCACert(ctx, signer, now)
	if err != nil {
		return RootRecord{}, err
	}
	rec.KeyRef = ref
	rec.AddedAt, rec.ActivateAt = now.UTC().Truncate(time.Second), now.Add(delay).UTC().Truncate(time.Second)
	if rec.Anchor == nil {
		// Self-signed: the new root and the roots in the bundle certify
		// each other. Under an upstream every meshca CA chains to the same
		// anchor, so no cross certificate is needed.
		if auth, aerr := ca.NewAuthority(rec.Cert, signer); aerr == nil {
			rec.Cross = r.crossSignLocked(ctx, auth, rec.ActivateAt, now)
		} else {
			r.log.WarnContext(ctx, "cannot cross-sign the new root", "error", aerr.Error())
		}
	}
	fp := fingerprintHex(rec.Cert)
	if rec.Anchor != nil {
		note = fmt.Sprintf(", issued by %q under upstream root sha256 %s", rec.Cert.Issuer.String(), fingerprintHex(rec.Anchor)) + note
	}
	err = r.cfg.Store.AddRoot(ctx, store.Root{
		Fingerprint: fp, DER: rootDER(rec), KeyRef: ref, AddedAt: rec.AddedAt, ActivateAt: rec.ActivateAt,
	}, store.AuditEvent{
		Time: now, Actor: actor, Action: "root.create",
		Detail: fmt.Sprintf("root sha256 %s, key %s, not after %s, activates at %s, %d cross certificates%s", fp, ref,
			rec.Cert.NotAfter.UTC().Format(time.RFC3339), rec.ActivateAt.Format(time.RFC3339), len(rec.Cross), note),
	})
	if err != nil {
		return RootRecord{}, fmt.Errorf("%w: record root: %w", grpcx.ErrUnavailable, err)
	}
	r.pendingKey = nil
	return rec, nil
}

// rotate creates a new root that joins the bundle now and signs after delay
// (zero: Config.PropagationDelay), and publishes the new bundle. While a
// rotation is in progress (see rotationInProgress, decided on the store as
// of now) it fails with grpcx.ErrFailedPrecondition unless force is set.
func (r *Root) rotate(ctx context.Context, delay time.Duration, actor string, force bool) (RootStatus, error) {
	if delay == 0 {
		delay = r.cfg.PropagationDelay
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leadLocked(ctx) {
		return RootStatus{}, errNotLeader
	}
	// Another replica, or the automatic rotation, may have rotated since
	// the last re-evaluation.
	if err := r.loadLocked(ctx); err != nil {
		return RootStatus{}, err
	}
	pending, inProgress := rotationInProgress(r.statuses)
	if inProgress && !force {
		return RootStatus{}, fmt.Errorf("%w: a root rotation is in progress: %s; rotating again would add one more root "+
			"to the trust bundle: wait until the bundle holds only the active root, or force it (--force)",
			grpcx.ErrFailedPrecondition, describePending(pending, r.lastUse))
	}
	var note string
	if inProgress {
		note = fmt.Sprintf(", forced while root %s was %s", fingerprintHex(pending.Cert), pending.State)
	}
	rec, err := r.createRootLocked(ctx, delay, actor, note)
	if err != nil {
		return RootStatus{}, err
	}
	if inProgress {
		r.log.WarnContext(ctx, "forced a root rotation while another was in progress", "actor", actor,
			"sha256", fingerprintHex(rec.Cert), "pending_sha256", fingerprintHex(pending.Cert), "pending_state", pending.State)
	}
	r.log.InfoContext(ctx, "rotated the root", "actor", actor, "sha256", fingerprintHex(rec.Cert),
		"activate_at", rec.ActivateAt)
	if err := r.loadLocked(ctx); err != nil {
		return RootStatus{RootRecord: rec, State: RootPrepared}, err
	}
	for _, s := range r.statuses {
		if bytes.Equal(s.Cert.Raw, rec.Cert.Raw) {
			return s, nil
		}
	}
	return RootStatus{RootRecord: rec, State: RootPrepared}, nil
}

// rotationInProgress reports whether a root rotation is in progress among
// roots: a root other than the active one is still in the bundle, either
// prepared (it has not started signing yet) or retiring (something signed
// under it is still valid). It returns the first such root. A rotation is
// complete once the bundle holds the active root alone; rotating before
// then would put a third root in the bundle (old, pending and new).
func rotationInProgress(roots []RootStatus) (RootStatus, bool) {
	for _, s := range roots {
		if s.State == RootPrepared || s.State == RootRetiring {
			return s, true
		}
	}
	return RootStatus{}, false
}

// describePending names a root that keeps a rotation in progress and when
// it stops doing so.
func describePending(s RootStatus, lastUse map[[32]byte]time.Time) string {
	fp := fingerprintHex(s.Cert)
	if s.State == RootPrepared {
		return fmt.Sprintf("root %s is prepared and becomes active at %s", fp, s.ActivateAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("root %s is retiring and leaves the bundle at %s, when the last intermediate under it expires",
		fp, lastUse[trust.Fingerprint(s.Cert)].UTC().Format(time.RFC3339))
}

// shouldRotate reports whether a new root is due at now: the active root
// has less than 1/3 of its life left and no newer root exists, or no root
// is active or prepared at all.
func shouldRotate(roots []RootStatus, now time.Time) bool {
	i := slices.IndexFunc(roots, func(s RootStatus) bool { return s.State == RootActive })
	if i < 0 {
		return !slices.ContainsFunc(roots, func(s RootStatus) bool { return s.State == RootPrepared })
	}
	if i < len(roots)-1 {
		return false
	}
	c := roots[i].Cert
	return rotation.CADue(now, rotation.Validity{NotBefore: c.NotBefore, NotAfter: c.NotAfter})
}

func verifySelfSigned(c *x509.Certificate, now time.Time) error {
	pool := x509.NewCertPool()
	pool.AddCert(c)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("new root does not verify: %w", err)
	}
	return nil
}

func fingerprintHex(c *x509.Certificate) string {
	fp := trust.Fingerprint(c)
	return hex.EncodeToString(fp[:])
}
