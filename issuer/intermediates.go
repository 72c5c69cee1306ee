package issuer

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
)

// IntermediateSource is what Intermediates asks for the next intermediate.
type IntermediateSource interface {
	// NewIntermediate obtains a new, verified intermediate and the bundle
	// it chains to.
	NewIntermediate(ctx context.Context) (*ca.Authority, *trust.TrustBundle, error)
}

// RootClient is what Intermediates needs from the root CA: its
// intermediates and its bundle. *Upstream implements it for a central
// root, *LocalRoot for a root held in this process.
type RootClient interface {
	IntermediateSource
	// WatchBundle calls fn with every newer bundle until ctx is cancelled.
	WatchBundle(ctx context.Context, fn func(*trust.TrustBundle)) error
}

var _ RootClient = (*Upstream)(nil)

// IntermediatesConfig configures an Intermediates loop.
type IntermediatesConfig struct {
	// Issuer is switched to each new intermediate. Required.
	Issuer *Issuer
	// Root provides intermediates and bundles. Required.
	Root RootClient
	// Authority is the intermediate the Issuer signs with now; nil means
	// Issuer.Authority().
	Authority *ca.Authority
	// Bundle is the bundle received with Authority. Required.
	Bundle *trust.TrustBundle
	// Jitter returns values in [0, 1) that spread retries; nil means
	// math/rand/v2's Float64.
	Jitter func() float64
	// MinBackoff and MaxBackoff bound the retry delay while the root is
	// unreachable; zero means 1 s and 1 min. RefusedBackoff is the delay
	// after the root rejected the credential; zero means 5 min.
	MinBackoff, MaxBackoff, RefusedBackoff time.Duration
	// AttemptTimeout bounds one request to the root; zero means 30 s.
	AttemptTimeout time.Duration
	// Logger receives one line per step; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c IntermediatesConfig) Validate() error {
	switch {
	case c.Issuer == nil:
		return errors.New("intermediates: issuer is required")
	case c.Root == nil:
		return errors.New("intermediates: root client is required")
	case c.Bundle == nil:
		return errors.New("intermediates: trust bundle is required")
	}
	c = c.withDefaults()
	if c.MinBackoff <= 0 || c.MinBackoff > c.MaxBackoff || c.RefusedBackoff < 0 || c.AttemptTimeout < 0 {
		return errors.New("intermediates: invalid backoff or timeout")
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
// c.Issuer must be set.
func (c IntermediatesConfig) withDefaults() IntermediatesConfig {
	if c.Authority == nil {
		c.Authority = c.Issuer.Authority()
	}
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	c.MinBackoff = cmp.Or(c.MinBackoff, time.Second)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, time.Minute)
	c.RefusedBackoff = cmp.Or(c.RefusedBackoff, 5*time.Minute)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, 30*time.Second)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Intermediates rotates the issuer's intermediate CA: it prepares the next
// one when less than 1/2 of the current one's life remains and activates it
// at 1/6, or both at once when the bundle names another root active. It
// relays the root's bundle to the issuer (SetAuthority) and to agents
// (Current, a BundleSource). While the root is unreachable it retries with
// backoff and the issuer keeps issuing with what it has.
type Intermediates struct {
	cfg IntermediatesConfig

	// Bundles offered by the watch goroutine, newest only.
	offerMu sync.Mutex
	offered *trust.TrustBundle
	offers  chan struct{}

	// State owned by the Run goroutine.
	current, next         *ca.Authority
	currentRoot, nextRoot [32]byte
	bundle                *trust.TrustBundle
	settled               [32]byte // an active root a renewal did not reach; not chased again
	failures              int
	retryAt               time.Time

	published *watch.Value[*trust.TrustBundle]
}

var _ BundleSource = (*Intermediates)(nil)

// NewIntermediates returns the loop; call Run to start it.
func NewIntermediates(cfg IntermediatesConfig) (*Intermediates, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Intermediates{
		cfg: cfg, offers: make(chan struct{}, 1),
		current: cfg.Authority, currentRoot: rootOf(cfg.Authority, cfg.Bundle), bundle: cfg.Bundle,
		published: watch.New(cfg.Bundle),
	}, nil
}

// Current returns the newest bundle from the root and a channel closed when
// a newer one arrives.
func (m *Intermediates) Current() (*trust.TrustBundle, <-chan struct{}) {
	return m.published.Load()
}

// Run rotates until ctx is cancelled, then returns nil. It watches the
// root's bundle meanwhile. Call it once.
func (m *Intermediates) Run(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); _ = m.cfg.Root.WatchBundle(wctx, m.offer) }()
	defer func() { cancel(); <-watched }()

	v := validity(m.current)
	m.cfg.Logger.Info("intermediate rotation started", "serial", trust.SerialHex(m.current.Certificate.SerialNumber),
		"not_after", v.NotAfter, "prepare_at", prepareAt(v), "activate_at", activateAt(v))
	for {
		now := time.Now()
		step, at := m.state().next(now)
		switch step {
		case stepRenew:
			m.renew(ctx)
			if ctx.Err() != nil {
				return nil
			}
			continue
		case stepActivate:
			m.activate()
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.offers:
			m.takeOffer()
		case <-time.After(at.Sub(now)):
		}
	}
}

func (m *Intermediates) state() rotationState {
	s := rotationState{
		current: validity(m.current), currentRoot: m.currentRoot, activeRoot: m.bundle.ActiveRoot,
		settled: m.settled, retryAt: m.retryAt,
	}
	if m.next != nil {
		s.hasNext, s.nextRoot = true, m.nextRoot
	}
	return s
}

func (m *Intermediates) renew(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, m.cfg.AttemptTimeout)
	a, tb, err := m.cfg.Root.NewIntermediate(actx)
	cancel()
	now := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			m.fail(now, "intermediate renewal failed; still issuing with the current intermediate", err)
		}
		return
	}
	m.applyBundle(tb)
	root, active := rootOf(a, tb), m.bundle.ActiveRoot
	switch {
	case active != [32]byte{} && root != active && m.currentRoot != active:
		m.settled = active
		m.cfg.Logger.Warn("the root signed the new intermediate under a root its bundle does not name active; switching on the normal schedule",
			"root_sha256", hex.EncodeToString(root[:]), "active_root_sha256", hex.EncodeToString(active[:]))
	case root == m.currentRoot && !a.Certificate.NotAfter.After(m.current.Certificate.NotAfter):
		// Near the root's own expiry every intermediate is clamped to it;
		// renewing again at once would only hammer the root.
		m.fail(now, "the root returned an intermediate that expires no later than the current one; discarded",
			fmt.Errorf("new intermediate expires at %s", a.Certificate.NotAfter.UTC().Format(time.RFC3339)))
		return
	}
	m.failures, m.retryAt = 0, time.Time{}
	m.next, m.nextRoot = a, root
	m.cfg.Issuer.SetPrepared(a) // its CRL travels before its first certificate
	m.cfg.Logger.Info("next intermediate prepared", "serial", trust.SerialHex(a.Certificate.SerialNumber),
		"not_after", a.Certificate.NotAfter, "root_sha256", hex.EncodeToString(root[:]),
		"current_not_after", m.current.Certificate.NotAfter)
}

// activate switches the issuer to the prepared intermediate, which
// SetAuthority verifies against the current bundle first.
func (m *Intermediates) activate() {
	now := time.Now()
	next := m.next
	m.next = nil
	own := m.bundle.OwnRoots()
	if own == nil {
		m.fail(now, "the trust bundle has no roots of its own; not switching intermediates", errors.New("no own roots"))
		return
	}
	if err := m.cfg.Issuer.SetAuthority(next, own); err != nil {
		m.fail(now, "the prepared intermediate does not verify; discarded", err)
		return
	}
	m.cfg.Logger.Info("intermediate activated", "serial", trust.SerialHex(next.Certificate.SerialNumber),
		"not_after", next.Certificate.NotAfter, "root_sha256", hex.EncodeToString(m.nextRoot[:]),
		"previous_serial", trust.SerialHex(m.current.Certificate.SerialNumber))
	m.current, m.currentRoot = next, m.nextRoot
}

// fail records a failed step and schedules the retry.
func (m *Intermediates) fail(now time.Time, msg string, err error) {
	m.failures++
	classified := err
	if errors.Is(err, ErrRejected) {
		classified = fmt.Errorf("%w: %w", rotation.ErrRefused, err)
	}
	delay, refused := rotation.RetryDelay(classified, m.failures, m.cfg.Jitter(), rotation.Config{
		MinBackoff: m.cfg.MinBackoff, MaxBackoff: m.cfg.MaxBackoff, RefusedBackoff: m.cfg.RefusedBackoff,
	})
	m.retryAt = now.Add(delay)
	v := validity(m.current)
	attrs := []any{"error", err.Error(), "failures", m.failures, "retry_in", delay.String(),
		"current_not_after", v.NotAfter, "current_expired", rotation.Expired(now, v)}
	switch {
	case refused || !now.Before(activateAt(v)):
		// Past 1/6 of its life the current intermediate is an alarm.
		m.cfg.Logger.Error(msg, attrs...)
	default:
		m.cfg.Logger.Warn(msg, attrs...)
	}
}

// offer is WatchBundle's callback; the Run goroutine applies the bundle.
func (m *Intermediates) offer(tb *trust.TrustBundle) {
	m.offerMu.Lock()
	if m.offered == nil || tb.Sequence > m.offered.Sequence {
		m.offered = tb
	}
	m.offerMu.Unlock()
	select {
	case m.offers <- struct{}{}:
	default:
	}
}

func (m *Intermediates) takeOffer() {
	m.offerMu.Lock()
	tb := m.offered
	m.offered = nil
	m.offerMu.Unlock()
	if tb != nil {
		m.applyBundle(tb)
	}
}

// applyBundle adopts tb if it is newer: the issuer's chains are verified
// against its roots from now on, and agents get it.
func (m *Intermediates) applyBundle(tb *trust.TrustBundle) {
	if tb == nil || tb.Sequence <= m.bundle.Sequence {
		return
	}
	m.bundle = tb
	m.currentRoot = rootOf(m.current, tb)
	if m.next != nil {
		m.nextRoot = rootOf(m.next, tb)
	}
	if own := tb.OwnRoots(); own == nil {
		m.cfg.Logger.Error("the trust bundle has no roots of its own; the issuer keeps its previous roots", "sequence", tb.Sequence)
	} else if err := m.cfg.Issuer.SetAuthority(m.current, own); err != nil {
		m.cfg.Logger.Error("the current intermediate does not verify against the new trust bundle; the issuer keeps its previous roots",
			"sequence", tb.Sequence, "error", err.Error())
	}
	m.published.Store(tb)
	m.cfg.Logger.Info("trust bundle updated", "sequence", tb.Sequence, "trust_domains", len(tb.Domains),
		"active_root_sha256", hex.EncodeToString(tb.ActiveRoot[:]))
}

// rootOf returns the fingerprint of the meshca root (one of tb's own
// authorities) that a's chain runs through, nearest first; zero when there
// is none. Under an upstream PKI the chain goes on above it.
func rootOf(a *ca.Authority, tb *trust.TrustBundle) [32]byte {
	own := tb.OwnAuthorities()
	if own == nil {
		return [32]byte{}
	}
	for _, c := range append([]*x509.Certificate{a.Certificate}, a.Chain...) {
		for _, r := range own.Roots() {
			if bytes.Equal(c.RawIssuer, r.RawSubject) && c.CheckSignatureFrom(r) == nil {
				return trust.Fingerprint(r)
			}
		}
	}
	return [32]byte{}
}

func validity(a *ca.Authority) rotation.Validity {
	return rotation.Validity{NotBefore: a.Certificate.NotBefore, NotAfter: a.Certificate.NotAfter}
}

// rotationState is everything the next rotation step depends on.
type rotationState struct {
	current               rotation.Validity
	currentRoot, nextRoot [32]byte
	hasNext               bool
	// activeRoot is the bundle's; zero when unknown.
	activeRoot [32]byte
	// settled is an active root that a renewal did not reach.
	settled [32]byte
	// retryAt is when a failed step may be retried; zero when none failed.
	retryAt time.Time
}

type rotationStep int

const (
	stepWait rotationStep = iota
	stepRenew
	stepActivate
)

// prepareAt is when less than 1/2 of v's life remains.
func prepareAt(v rotation.Validity) time.Time {
	return v.NotAfter.Add(-v.NotAfter.Sub(v.NotBefore) / 2)
}

// activateAt is when less than 1/6 of v's life remains.
func activateAt(v rotation.Validity) time.Time {
	return v.NotAfter.Add(-v.NotAfter.Sub(v.NotBefore) / 6)
}

// next returns what to do at now: renew or activate now, or wait until the
// returned time (or a new bundle).
func (s rotationState) next(now time.Time) (rotationStep, time.Time) {
	moved := s.activeRoot != [32]byte{} && s.activeRoot != s.currentRoot && s.activeRoot != s.settled
	switch {
	case s.hasNext && (!now.Before(activateAt(s.current)) || (moved && s.nextRoot == s.activeRoot)):
		return stepActivate, now
	case s.hasNext && !moved:
		return stepWait, activateAt(s.current)
	case !s.hasNext && !moved && now.Before(prepareAt(s.current)):
		return stepWait, prepareAt(s.current)
	case now.Before(s.retryAt):
		return stepWait, s.retryAt
	}
	return stepRenew, now
}
