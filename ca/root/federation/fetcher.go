package federation

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/trust"
)

// Fetcher defaults.
const (
	defaultRefreshInterval    = 5 * time.Minute
	defaultMinRefreshInterval = time.Second
	defaultMaxRefreshInterval = time.Hour
	defaultFetchTimeout       = 30 * time.Second
)

// errStaleBundle means an endpoint served a bundle whose sequence number is
// lower than the one already held; it is ignored.
var errStaleBundle = errors.New("bundle sequence number went back")

// FetcherConfig configures a Fetcher.
type FetcherConfig struct {
	// Relationships to poll, one per federated trust domain. May be empty:
	// the Fetcher then holds nothing and Run waits for its context.
	Relationships []Relationship
	// RefreshInterval is the polling period when the endpoint sends no
	// refresh hint; zero means DefaultRefreshInterval (5 minutes).
	RefreshInterval time.Duration
	// MinRefreshInterval and MaxRefreshInterval clamp the period (hint or
	// RefreshInterval); zero means 1 second and 1 hour. After a failed
	// fetch the next one comes sooner: MinRefreshInterval, doubled per
	// consecutive failure up to the regular period.
	MinRefreshInterval, MaxRefreshInterval time.Duration
	// FetchTimeout bounds one fetch; zero means DefaultFetchTimeout.
	FetchTimeout time.Duration
	// Logger receives bundle changes and fetch failures; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c FetcherConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.RefreshInterval < 0 || c.FetchTimeout < 0:
		return errors.New("federation fetcher: durations must not be negative")
	case c.MinRefreshInterval <= 0 || c.MinRefreshInterval > c.MaxRefreshInterval:
		return fmt.Errorf("federation fetcher: refresh bounds [%v, %v] are invalid", c.MinRefreshInterval, c.MaxRefreshInterval)
	}
	seen := map[spiffeid.TrustDomain]bool{}
	for i := range c.Relationships {
		r := &c.Relationships[i]
		if err := r.validate(); err != nil {
			return fmt.Errorf("federation fetcher: relationship %d (%q): %w", i, r.TrustDomain, err)
		}
		if seen[r.TrustDomain] {
			return fmt.Errorf("federation fetcher: trust domain %q has two relationships", r.TrustDomain)
		}
		seen[r.TrustDomain] = true
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c FetcherConfig) withDefaults() FetcherConfig {
	c.RefreshInterval = cmp.Or(c.RefreshInterval, defaultRefreshInterval)
	c.MinRefreshInterval = cmp.Or(c.MinRefreshInterval, defaultMinRefreshInterval)
	c.MaxRefreshInterval = cmp.Or(c.MaxRefreshInterval, defaultMaxRefreshInterval)
	c.FetchTimeout = cmp.Or(c.FetchTimeout, defaultFetchTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Fetcher polls the bundle endpoints of federated trust domains and holds
// the last good bundle of each: a failed fetch (endpoint down, wrong
// identity, bad bundle) changes nothing but Status. It is the federated
// bundle source of the root server. Safe for concurrent use.
type Fetcher struct {
	cfg  FetcherConfig
	rels []*relState // sorted by trust domain

	domains watch.Value[[]trust.DomainBundle]
}

// relState is one relationship and what was learnt from it.
type relState struct {
	rel Relationship

	mu     sync.Mutex
	bundle *spiffebundle.Bundle // last good, or the initial bundle; nil if none yet
	roots  *trust.Bundle        // bundle's X.509 authorities
	jwts   []trust.JWTAuthority // bundle's JWT authorities, by key ID
	status RelationshipStatus
}

// RelationshipStatus is what a Fetcher knows about one relationship, for
// metrics and health.
type RelationshipStatus struct {
	TrustDomain spiffeid.TrustDomain
	URL         string
	// HasBundle reports whether a bundle (fetched or initial) is held;
	// Sequence is its sequence number, zero when it has none.
	HasBundle bool
	Sequence  uint64
	// Roots is the number of X.509 authorities held; JWTAuthorities the
	// number of jwt-svid keys.
	Roots, JWTAuthorities int
	// LastAttempt and LastSuccess are zero until the first (successful)
	// fetch; LastError is the last fetch's error, empty after a success.
	LastAttempt, LastSuccess time.Time
	LastError                string
	// ConsecutiveFailures resets on success; Fetches and FetchErrors only
	// grow (counters).
	ConsecutiveFailures int
	Fetches             uint64
	FetchErrors         uint64
}

// NewFetcher checks cfg and returns a Fetcher holding the initial bundles.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	f := &Fetcher{cfg: cfg}
	for _, r := range cfg.Relationships {
		rs := &relState{rel: r, status: RelationshipStatus{TrustDomain: r.TrustDomain, URL: r.URL}}
		if r.InitialBundle != nil {
			if _, err := rs.accept(r.InitialBundle.Clone()); err != nil {
				return nil, fmt.Errorf("federation fetcher: %s: initial bundle: %w", r.TrustDomain, err)
			}
		}
		f.rels = append(f.rels, rs)
	}
	slices.SortFunc(f.rels, func(a, b *relState) int {
		return cmp.Compare(a.rel.TrustDomain.Name(), b.rel.TrustDomain.Name())
	})
	f.domains.Store(f.collect())
	return f, nil
}

// Domains returns the federated bundles held, one per trust domain that has
// one, sorted by name, all marked Federated. Call Changed first to wait for
// the next change without missing one.
func (f *Fetcher) Domains() []trust.DomainBundle {
	domains, _ := f.domains.Load()
	return slices.Clone(domains)
}

// Changed returns a channel that is closed when Domains next changes (a
// root or JWT authority added or removed in some trust domain). Each change closes the
// channel and starts a new one.
func (f *Fetcher) Changed() <-chan struct{} { return f.domains.Changed() }

// Status returns the state of every relationship, sorted by trust domain.
func (f *Fetcher) Status() []RelationshipStatus {
	out := make([]RelationshipStatus, 0, len(f.rels))
	for _, r := range f.rels {
		r.mu.Lock()
		out = append(out, r.status)
		r.mu.Unlock()
	}
	return out
}

// Refresh fetches every relationship once, concurrently, and returns the
// failures joined. It is what Run does on each tick; callers may use it to
// fetch on demand.
func (f *Fetcher) Refresh(ctx context.Context) error {
	errs := make([]error, len(f.rels))
	var wg sync.WaitGroup
	for i, r := range f.rels {
		wg.Go(func() { errs[i] = f.fetch(ctx, r) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Run polls every relationship until ctx is cancelled, then returns nil:
// each at once, then at its refresh delay (see FetcherConfig). Failures are
// logged and counted in Status; they never stop the loop. Call Run once.
func (f *Fetcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, r := range f.rels {
		wg.Go(func() { f.poll(ctx, r) })
	}
	wg.Wait()
	<-ctx.Done() // with no relationships, nothing above waited
	return nil
}

func (f *Fetcher) poll(ctx context.Context, r *relState) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := f.fetch(ctx, r)
		if ctx.Err() != nil {
			return
		}
		hint, failures, held := r.schedule()
		delay := refreshDelay(&f.cfg, hint, failures)
		if err != nil {
			f.cfg.Logger.Warn("federated bundle fetch failed; keeping the last good bundle",
				"trust_domain", r.rel.TrustDomain.Name(), "url", r.rel.URL, "error", err.Error(),
				"failures", failures, "have_bundle", held, "retry_in", delay.String())
		}
		t.Reset(delay)
	}
}

// fetch fetches r's bundle once and, if it is good and new, publishes it.
func (f *Fetcher) fetch(ctx context.Context, r *relState) error {
	opt, err := r.authOption()
	var b *spiffebundle.Bundle
	if err == nil {
		actx, cancel := context.WithTimeout(ctx, f.cfg.FetchTimeout)
		b, err = federation.FetchBundle(actx, r.rel.TrustDomain, r.rel.URL, opt)
		cancel()
	}
	changed := false
	if err == nil {
		changed, err = r.accept(b)
	}
	r.record(time.Now(), err)
	if err != nil {
		return fmt.Errorf("trust domain %s: %w", r.rel.TrustDomain, err)
	}
	if changed {
		seq, _ := b.SequenceNumber()
		f.cfg.Logger.Info("federated bundle updated", "trust_domain", r.rel.TrustDomain.Name(),
			"sequence", seq, "roots", len(b.X509Authorities()), "jwt_authorities", len(b.JWTAuthorities()))
		f.publish()
	}
	return nil
}

// authOption returns how to authenticate r's endpoint: Web PKI, or SPIFFE
// against the bundle held for r's trust domain, so that a remote root
// rotation (new root added to the bundle, then the endpoint's SVID moved
// under it) is followed.
func (r *relState) authOption() (federation.FetchOption, error) {
	if r.rel.Profile == ProfileHTTPSWeb {
		return federation.WithWebPKIRoots(r.rel.WebRoots), nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bundle == nil {
		return nil, errors.New("no bundle to authenticate the endpoint with")
	}
	held := x509bundle.FromX509Authorities(r.rel.TrustDomain, r.bundle.X509Authorities())
	return federation.WithSPIFFEAuth(held, r.rel.EndpointSPIFFEID), nil
}

// accept makes b the held bundle if it is usable and not older than the
// one held, and reports whether its roots or JWT authorities changed.
func (r *relState) accept(b *spiffebundle.Bundle) (bool, error) {
	certs := b.X509Authorities()
	if len(certs) == 0 {
		return false, errors.New("bundle has no X.509 authorities")
	}
	roots, err := trust.NewBundle(certs...)
	if err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bundle != nil {
		newSeq, ok := b.SequenceNumber()
		oldSeq, okOld := r.bundle.SequenceNumber()
		if ok && okOld && newSeq < oldSeq {
			return false, fmt.Errorf("%w: got %d, hold %d", errStaleBundle, newSeq, oldSeq)
		}
	}
	jwts := jwtAuthorities(b)
	changed := r.roots == nil || !bytes.Equal(r.roots.PEM(), roots.PEM()) || !slices.EqualFunc(r.jwts, jwts, sameJWTAuthority)
	r.bundle, r.roots, r.jwts = b, roots, jwts
	r.status.HasBundle, r.status.Roots, r.status.JWTAuthorities = true, len(roots.Roots()), len(jwts)
	r.status.Sequence, _ = b.SequenceNumber()
	return changed, nil
}

func (r *relState) record(now time.Time, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.status
	s.LastAttempt = now
	s.Fetches++
	if err != nil {
		s.LastError = err.Error()
		s.ConsecutiveFailures++
		s.FetchErrors++
		return
	}
	s.LastSuccess, s.LastError, s.ConsecutiveFailures = now, "", 0
}

// schedule returns what refreshDelay needs: the held bundle's refresh hint
// (zero if none), the consecutive failures, and whether a bundle is held.
func (r *relState) schedule() (hint time.Duration, failures int, held bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bundle != nil {
		hint, _ = r.bundle.RefreshHint()
	}
	return hint, r.status.ConsecutiveFailures, r.bundle != nil
}

// publish makes the current bundles of all relationships visible, waking
// the waiters on Changed if they differ from what was published.
func (f *Fetcher) publish() {
	f.domains.Update(func(old []trust.DomainBundle) ([]trust.DomainBundle, bool) {
		domains := f.collect()
		return domains, !domainsEqual(old, domains)
	})
}

func (f *Fetcher) collect() []trust.DomainBundle {
	var out []trust.DomainBundle
	for _, r := range f.rels {
		r.mu.Lock()
		if r.roots != nil {
			out = append(out, trust.DomainBundle{TrustDomain: r.rel.TrustDomain, Roots: r.roots, Federated: true,
				JWTAuthorities: slices.Clone(r.jwts)})
		}
		r.mu.Unlock()
	}
	return out
}

func domainsEqual(a, b []trust.DomainBundle) bool {
	return slices.EqualFunc(a, b, func(x, y trust.DomainBundle) bool {
		return x.TrustDomain == y.TrustDomain && bytes.Equal(x.Roots.PEM(), y.Roots.PEM()) &&
			slices.EqualFunc(x.JWTAuthorities, y.JWTAuthorities, sameJWTAuthority)
	})
}

// jwtAuthorities returns b's jwt-svid keys, by key ID. A federated mesh's
// keys carry no chain and no expiry: the root's bundle signature vouches
// for them, and they stay until that mesh's bundle drops them.
func jwtAuthorities(b *spiffebundle.Bundle) []trust.JWTAuthority {
	var out []trust.JWTAuthority
	for kid, pub := range b.JWTAuthorities() {
		out = append(out, trust.JWTAuthority{KeyID: kid, PublicKey: pub})
	}
	slices.SortFunc(out, func(x, y trust.JWTAuthority) int { return cmp.Compare(x.KeyID, y.KeyID) })
	return out
}

// sameJWTAuthority reports whether a and b are the same key under the same
// key ID.
func sameJWTAuthority(a, b trust.JWTAuthority) bool {
	x, errX := x509.MarshalPKIXPublicKey(a.PublicKey)
	y, errY := x509.MarshalPKIXPublicKey(b.PublicKey)
	return a.KeyID == b.KeyID && errX == nil && errY == nil && bytes.Equal(x, y)
}
