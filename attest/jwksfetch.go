package attest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/client-go/kubernetes"
)

// defaultJWKSPath is where a Kubernetes API server publishes the public keys
// of its service-account token issuer.
const defaultJWKSPath = "/openid/v1/jwks"

// RemoteKeysConfig configures [NewRemoteKeys].
type RemoteKeysConfig struct {
	// Client reaches the API server; its credentials must allow GET on
	// Path (Kubernetes grants it to every service account through the
	// system:service-account-issuer-discovery role). Required.
	Client kubernetes.Interface
	// Path of the key set on the API server. Empty means DefaultJWKSPath.
	Path string
	// RefreshInterval is how long a fetched key set is used before it is
	// fetched again (in the background; callers keep the old set meanwhile).
	// Zero means 5 minutes.
	RefreshInterval time.Duration
	// MaxStale is how much longer than RefreshInterval a key set keeps being
	// used while refreshing fails; after that Keys fails (ErrUnavailable for
	// the attestor). Zero means 1 hour.
	MaxStale time.Duration
	// MinRefreshInterval is the least time between two fetches that were
	// not due: a refresh forced by a token with an unknown key ID, or a
	// retry after a failure. It bounds what garbage tokens can make the API
	// server do. Zero means 10 seconds.
	MinRefreshInterval time.Duration
	// Timeout bounds one fetch. Zero means DefaultAPITimeout.
	Timeout time.Duration
	// Now is the clock the refresh schedule (RefreshInterval, MaxStale,
	// MinRefreshInterval) is measured on. Nil means time.Now. It exists
	// because the key set is fetched from a real kube-apiserver, whose
	// outage tests (test/kube) move the schedule by hours without waiting
	// and cannot run inside a synctest bubble.
	Now func() time.Time
	// Logger receives background refresh failures. Nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports whether c is usable; zero values that have defaults are.
func (c RemoteKeysConfig) Validate() error {
	switch {
	case c.Client == nil:
		return errors.New("remote jwks: kubernetes client is required")
	case c.RefreshInterval < 0 || c.MaxStale < 0 || c.MinRefreshInterval < 0 || c.Timeout < 0:
		return errors.New("remote jwks: negative interval")
	}
	return nil
}

// RemoteKeys is a keySource that fetches a cluster's service-account
// signing keys from its API server and keeps them fresh. It also implements
// keyRefresher, so [JWKS] picks up a rotated key as soon as a token signed
// with it arrives. Safe for concurrent use.
type RemoteKeys struct {
	cfg RemoteKeysConfig

	mu          sync.Mutex
	set         *jose.JSONWebKeySet // nil until the first successful fetch
	fetchedAt   time.Time
	lastAttempt time.Time
	lastErr     error
	inflight    chan struct{} // closed when the running fetch ends; nil if none
}

var (
	_ KeySource    = (*RemoteKeys)(nil)
	_ keyRefresher = (*RemoteKeys)(nil)
)

// NewRemoteKeys applies defaults to cfg and validates it. It does not fetch:
// the first Keys call does.
func NewRemoteKeys(cfg RemoteKeysConfig) (*RemoteKeys, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Path == "" {
		cfg.Path = defaultJWKSPath
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = 5 * time.Minute
	}
	if cfg.MaxStale == 0 {
		cfg.MaxStale = time.Hour
	}
	if cfg.MinRefreshInterval == 0 {
		cfg.MinRefreshInterval = 10 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultAPITimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &RemoteKeys{cfg: cfg}, nil
}

// Keys returns the current key set. A set older than RefreshInterval is
// returned as is while a background fetch replaces it; without a usable set
// Keys waits for a fetch (or ctx). Failed fetches are retried at most once
// per MinRefreshInterval; meanwhile Keys returns the last error at once.
func (r *RemoteKeys) Keys(ctx context.Context) (*jose.JSONWebKeySet, error) {
	r.mu.Lock()
	now := r.cfg.Now()
	if r.set != nil {
		age := now.Sub(r.fetchedAt)
		if age >= r.cfg.RefreshInterval && now.Sub(r.lastAttempt) >= r.cfg.MinRefreshInterval {
			r.startFetchLocked()
		}
		if age < r.cfg.RefreshInterval+r.cfg.MaxStale {
			set := r.set
			r.mu.Unlock()
			return set, nil
		}
	}
	if r.inflight == nil && r.lastErr != nil && now.Sub(r.lastAttempt) < r.cfg.MinRefreshInterval {
		err := r.lastErr
		r.mu.Unlock()
		return nil, err
	}
	done := r.startFetchLocked()
	r.mu.Unlock()
	return r.wait(ctx, done)
}

// Refresh fetches the key set now, unless a fetch ended less than
// MinRefreshInterval ago, in which case it returns the current set (the same
// pointer Keys returned). It waits for the fetch or ctx.
func (r *RemoteKeys) Refresh(ctx context.Context) (*jose.JSONWebKeySet, error) {
	r.mu.Lock()
	if r.inflight == nil && r.cfg.Now().Sub(r.lastAttempt) < r.cfg.MinRefreshInterval {
		set, err := r.set, r.lastErr
		r.mu.Unlock()
		if set == nil {
			return nil, err
		}
		return set, nil
	}
	done := r.startFetchLocked()
	r.mu.Unlock()
	return r.wait(ctx, done)
}

func (r *RemoteKeys) wait(ctx context.Context, done <-chan struct{}) (*jose.JSONWebKeySet, error) {
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("remote jwks: %w", ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set != nil && r.cfg.Now().Sub(r.fetchedAt) < r.cfg.RefreshInterval+r.cfg.MaxStale {
		return r.set, nil
	}
	if r.lastErr != nil {
		return nil, r.lastErr
	}
	return nil, errors.New("remote jwks: no key set")
}

// startFetchLocked starts a fetch unless one is running and returns the
// channel closed when it ends. The fetch runs on its own context, so a
// caller that gives up does not cancel it for the others. r.mu is held.
func (r *RemoteKeys) startFetchLocked() <-chan struct{} {
	if r.inflight != nil {
		return r.inflight
	}
	done := make(chan struct{})
	r.inflight = done
	r.lastAttempt = r.cfg.Now()
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
		set, err := r.fetch(ctx)
		cancel()
		r.mu.Lock()
		defer r.mu.Unlock()
		r.inflight = nil
		r.lastAttempt = r.cfg.Now()
		if err != nil {
			r.lastErr = err
			if r.set != nil {
				r.cfg.Logger.Warn("jwks refresh failed; keeping the previous key set",
					"path", r.cfg.Path, "fetched_at", r.fetchedAt, "error", err.Error())
			}
			return
		}
		r.set, r.fetchedAt, r.lastErr = set, r.cfg.Now(), nil
	}()
	return done
}

func (r *RemoteKeys) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	raw, err := r.cfg.Client.Discovery().RESTClient().Get().AbsPath(r.cfg.Path).Do(ctx).Raw()
	if err != nil {
		return nil, fmt.Errorf("remote jwks: get %s: %w", r.cfg.Path, err)
	}
	return parseKeySet(raw)
}

// parseKeySet decodes a JWK Set and requires at least one public signing
// key, so that an empty or private-key-only answer never replaces a good set.
func parseKeySet(raw []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("remote jwks: decode: %w", err)
	}
	for i := range set.Keys {
		if k := &set.Keys[i]; k.IsPublic() && k.Valid() && (k.Use == "" || k.Use == "sig") {
			return &set, nil
		}
	}
	return nil, fmt.Errorf("remote jwks: no public signing key among %d keys", len(set.Keys))
}
