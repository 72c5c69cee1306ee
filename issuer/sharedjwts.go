package issuer

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// SharedJWTsConfig configures a SharedJWTs.
type SharedJWTsConfig struct {
	// Own supplies this replica's JWT authorities (a *JWTKeys). Required.
	Own JWTSource
	// Store is shared by the replicas. Required.
	Store store.JWTAuthorityStore
	// Root is the local root every replica's intermediates chain to (its
	// current CA, asked at every read, as SharedCRLsConfig.Root); a stored
	// authority whose certificate does not chain to it is never served.
	// Required.
	Root CASource
	// TrustDomain is the domain whose JWT-SVIDs the keys sign. Required.
	TrustDomain spiffeid.TrustDomain
	// Cluster names the rows this replica writes and reads. Required.
	Cluster string
	// PollInterval is how often the stored authorities are read; zero
	// means DefaultSharedCRLPollInterval. They are read at once too
	// whenever Own changes (a new key).
	PollInterval time.Duration
	// AttemptTimeout bounds one store call; zero means 30 s.
	AttemptTimeout time.Duration
	// Logger receives failures and ignored rows; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c SharedJWTsConfig) Validate() error {
	switch {
	case c.Own == nil || c.Store == nil:
		return errors.New("shared JWT keys: own keys and store are required")
	case c.Root == nil || c.Root.CA() == nil || !c.Root.CA().Certificate.IsCA:
		return errors.New("shared JWT keys: a CA root is required")
	case c.TrustDomain.IsZero() || c.Cluster == "":
		return errors.New("shared JWT keys: trust domain and cluster are required")
	case c.PollInterval < 0 || c.AttemptTimeout < 0:
		return errors.New("shared JWT keys: negative poll interval or timeout")
	}
	return nil
}

// SharedJWTs is the JWTSource a replica of a standalone issuer serves in
// its bundle: its own JWT-SVID keys together with every other replica's,
// exchanged through the shared store and each verified against the root
// first. Each replica signs with keys of its own, so without it a JWT-SVID
// minted by one replica would not validate at a workload whose bundle came
// from another; and a key outlives the replica that made it (a restart)
// for as long as its tokens can.
type SharedJWTs struct {
	cfg SharedJWTsConfig

	// State owned by the Run goroutine: the verified stored authorities,
	// and the rows refused (logged once each).
	others  []trust.JWTAuthority
	refused map[string]bool

	current watch.Value[[]trust.JWTAuthority]
}

var _ JWTSource = (*SharedJWTs)(nil)

// NewSharedJWTs returns a SharedJWTs; call Run to start it. Until then
// Current returns nothing.
func NewSharedJWTs(cfg SharedJWTsConfig) (*SharedJWTs, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.PollInterval = cmp.Or(cfg.PollInterval, DefaultSharedCRLPollInterval)
	cfg.AttemptTimeout = cmp.Or(cfg.AttemptTimeout, 30*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &SharedJWTs{cfg: cfg, refused: map[string]bool{}}, nil
}

// Current returns this replica's JWT authorities and the verified stored
// ones, newest first, and a channel closed when they change.
func (s *SharedJWTs) Current() ([]trust.JWTAuthority, <-chan struct{}) {
	return s.current.Load()
}

// Run stores this replica's authorities whenever they change and merges
// the stored ones at every change and every PollInterval, until ctx is
// cancelled; then it returns nil. A failed store call keeps what is served
// and is tried again at the next poll. Call it once.
func (s *SharedJWTs) Run(ctx context.Context) error {
	return runShared(ctx, s.cfg.PollInterval, s.cfg.Own.Current, s.put, s.merge)
}

// put stores own; it reports whether all were stored.
func (s *SharedJWTs) put(ctx context.Context, own []trust.JWTAuthority) bool {
	ok := true
	for _, a := range own {
		pub, err := x509.MarshalPKIXPublicKey(a.PublicKey)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
			err = s.cfg.Store.PutJWTAuthority(actx, store.JWTAuthority{
				KeyID: a.KeyID, Cluster: s.cfg.Cluster, TrustDomain: s.cfg.TrustDomain.Name(), PublicKey: pub,
				Chain: a.Chain, ExpiresAt: a.ExpiresAt.UTC().Truncate(time.Second),
			})
			cancel()
		}
		if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
			if ctx.Err() == nil {
				s.cfg.Logger.Warn("cannot store a JWT-SVID key for the other replicas; retrying at the next poll",
					"kid", a.KeyID, "error", err.Error())
			}
			ok = false
		}
	}
	return ok
}

// merge serves own with the stored authorities of the cluster that verify
// under the root at now. A failed read keeps those served before.
func (s *SharedJWTs) merge(ctx context.Context, own []trust.JWTAuthority, now time.Time) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	rows, err := s.cfg.Store.JWTAuthorities(actx, now)
	cancel()
	switch {
	case err != nil && ctx.Err() == nil:
		s.cfg.Logger.Warn("cannot read the other replicas' JWT-SVID keys; serving those read before", "error", err.Error())
	case err == nil:
		s.others = s.verified(rows, now)
	}
	out := slices.Clone(own)
	for _, a := range s.others {
		if !slices.ContainsFunc(out, func(b trust.JWTAuthority) bool { return b.KeyID == a.KeyID }) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(x, y trust.JWTAuthority) int {
		return cmp.Or(y.ExpiresAt.Compare(x.ExpiresAt), cmp.Compare(x.KeyID, y.KeyID))
	})
	s.current.Update(func(old []trust.JWTAuthority) ([]trust.JWTAuthority, bool) {
		return out, !sameAuthorities(old, out)
	})
}

// verified returns the authorities of the cluster's rows whose certificate
// an intermediate of the root issued for this trust domain and that are
// current at now. A row refused is logged once per key.
func (s *SharedJWTs) verified(rows []store.JWTAuthority, now time.Time) []trust.JWTAuthority {
	var out []trust.JWTAuthority
	roots, rootErr := trust.NewBundle(s.cfg.Root.CA().Certificate)
	for _, r := range rows {
		if r.Cluster != s.cfg.Cluster || r.TrustDomain != s.cfg.TrustDomain.Name() {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
		a := trust.JWTAuthority{KeyID: r.KeyID, PublicKey: pub, ExpiresAt: r.ExpiresAt, Chain: r.Chain}
		if err == nil {
			err = rootErr
		}
		if err == nil {
			err = trust.VerifyJWTAuthority(a, s.cfg.TrustDomain, roots, now)
		}
		if err == nil {
			out = append(out, a)
			continue
		}
		if !s.refused[r.KeyID] {
			s.refused[r.KeyID] = true
			s.cfg.Logger.Warn("not serving a stored JWT-SVID key that no intermediate of the root certified, or that is not current",
				"kid", r.KeyID, "error", err.Error())
		}
	}
	return out
}

// runShared is the loop of a replica's share in a standalone issuer's
// shared state (SharedCRLs, SharedJWTs): it stores own whenever it
// changes and merges the stored state at every change and every poll,
// until ctx is cancelled; then it returns nil. put reports whether all of
// own was stored; what was not is stored again at the next poll.
func runShared[T any](ctx context.Context, poll time.Duration, own func() (T, <-chan struct{}),
	put func(context.Context, T) bool, merge func(context.Context, T, time.Time)) error {
	var stored <-chan struct{} // own's change channel of the last stored value
	for {
		cur, changed := own()
		if changed != stored && put(ctx, cur) {
			stored = changed
		}
		merge(ctx, cur, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(poll):
		}
	}
}
