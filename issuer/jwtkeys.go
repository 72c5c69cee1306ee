package issuer

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/trust"
)

// Defaults of JWT-SVID lifetimes.
const (
	DefaultJWTTTL    = 5 * time.Minute
	DefaultJWTMaxTTL = time.Hour
)

// JWTSource supplies the issuer's own JWT authorities. *JWTKeys
// implements it.
type JWTSource interface {
	// Current returns the authorities and a channel closed when they
	// change.
	Current() ([]trust.JWTAuthority, <-chan struct{})
}

// JWTPublisher hands the issuer's JWT authorities to the root, which
// publishes them to every cluster. *Upstream implements it.
type JWTPublisher interface {
	PublishJWTAuthorities(ctx context.Context, as []trust.JWTAuthority) error
}

var (
	_ JWTSource    = (*JWTKeys)(nil)
	_ JWTPublisher = (*Upstream)(nil)
)

// JWTConfig configures the issuer's JWT-SVIDs and their keys.
type JWTConfig struct {
	// Issuer's intermediates authenticate the keys; its attestor, policy
	// and deny-list decide who gets a JWT-SVID. Required.
	Issuer *Issuer
	// DefaultTTL applies when a request names no lifetime; zero means
	// DefaultJWTTTL (5 min).
	DefaultTTL time.Duration
	// MaxTTL clamps requested lifetimes; zero means DefaultJWTMaxTTL (1 h).
	// A key stays published for MaxTTL after its last use.
	MaxTTL time.Duration
	// IssuerURL, when set, is every JWT-SVID's "iss" claim: the https URL
	// of the trust domain's OIDC discovery document, which cloud token
	// services require. Empty means no "iss".
	IssuerURL string
	// Publisher, when set, receives every new set of authorities (the
	// root, with a central root). Failures are retried with backoff and
	// never block minting.
	Publisher JWTPublisher
	// Jitter returns values in [0, 1) that spread retries; nil means
	// math/rand/v2's Float64.
	Jitter func() float64
	// MinBackoff and MaxBackoff bound the retry delay of a failed key
	// preparation or publication; zero means 1 s and 1 min.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one publication; zero means 30 s.
	AttemptTimeout time.Duration
	// Logger receives a line per key change and per failure; nil means the
	// Issuer's.
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c JWTConfig) Validate() error {
	if c.Issuer == nil {
		return errors.New("jwt: issuer is required")
	}
	c = c.withDefaults()
	switch {
	case c.DefaultTTL <= 0 || c.MaxTTL <= 0:
		return errors.New("jwt: lifetimes must be positive")
	case c.DefaultTTL > c.MaxTTL:
		return fmt.Errorf("jwt: default ttl %v exceeds max ttl %v", c.DefaultTTL, c.MaxTTL)
	case c.MinBackoff <= 0 || c.MinBackoff > c.MaxBackoff || c.AttemptTimeout < 0:
		return errors.New("jwt: invalid backoff or timeout")
	}
	if c.IssuerURL != "" {
		u, err := url.Parse(c.IssuerURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("jwt: issuer %q is not an https URL without query or fragment", c.IssuerURL)
		}
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
// c.Issuer must be set.
func (c JWTConfig) withDefaults() JWTConfig {
	c.DefaultTTL = cmp.Or(c.DefaultTTL, DefaultJWTTTL)
	c.MaxTTL = cmp.Or(c.MaxTTL, DefaultJWTMaxTTL)
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	c.MinBackoff = cmp.Or(c.MinBackoff, time.Second)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, time.Minute)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, 30*time.Second)
	c.Logger = cmp.Or(c.Logger, c.Issuer.cfg.Logger)
	return c
}

// newRetry returns the pacing, after failures, of a loop run with c.
func (c JWTConfig) newRetry() retry {
	return retry{jitter: c.Jitter, minDelay: c.MinBackoff, maxDelay: c.MaxBackoff, logger: c.Logger}
}

// JWTKeys holds the issuer's JWT-SVID signing keys and mints JWT-SVIDs
// (see Mint). There is one key per intermediate: an ECDSA P-256 key made
// in memory (never stored or logged) with a certificate that the
// intermediate signs (ca.SignJWTSigner). A key is made and published as
// soon as its intermediate is prepared (Issuer.SetPrepared), signs from the
// intermediate's activation on, and stays published until the last
// JWT-SVID it signed can have expired (its last use plus MaxTTL), so that
// validators know every key before it is used and after its last token.
// It is safe for concurrent use.
type JWTKeys struct {
	cfg JWTConfig

	mu   sync.Mutex // guards keys
	keys map[*ca.Authority]*jwtKey

	published watch.Value[[]trust.JWTAuthority]
}

// jwtKey is one signing key and what it is published as.
type jwtKey struct {
	priv      *ecdsa.PrivateKey
	authority trust.JWTAuthority
	// notAfter is its certificate's: no token it signs lives longer.
	notAfter time.Time
	// lastUse is the Unix nanoseconds of its latest signature; 0 before
	// the first.
	lastUse atomic.Int64
}

// used records a signature at now.
func (k *jwtKey) used(now time.Time) {
	n := now.UnixNano()
	for {
		old := k.lastUse.Load()
		if old >= n || k.lastUse.CompareAndSwap(old, n) {
			return
		}
	}
}

func (k *jwtKey) lastUsed() time.Time {
	if n := k.lastUse.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// NewJWTKeys returns the key holder with a key for the issuer's current
// intermediate (and its prepared one, if any), published at once; call Run
// to keep them in step with the intermediates.
func NewJWTKeys(cfg JWTConfig) (*JWTKeys, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &JWTKeys{cfg: cfg.withDefaults(), keys: map[*ca.Authority]*jwtKey{}}
	if _, err := k.refresh(k.cfg.Issuer.cfg.Now()); err != nil {
		return nil, err
	}
	return k, nil
}

// Current returns the published authorities, the current intermediate's
// key first, and a channel closed when they change.
func (k *JWTKeys) Current() ([]trust.JWTAuthority, <-chan struct{}) {
	return k.published.Load()
}

// Run keeps the keys in step with the issuer's intermediates until ctx is
// cancelled, then returns nil: a key for every new current or prepared
// intermediate, and retired keys dropped once their tokens can have
// expired. With a Publisher it publishes every new set meanwhile. Call it
// once.
func (k *JWTKeys) Run(ctx context.Context) error {
	if k.cfg.Publisher != nil {
		published := make(chan struct{})
		go func() { defer close(published); k.publish(ctx) }()
		defer func() { <-published }()
	}
	rt := k.cfg.newRetry()
	for {
		changed := k.cfg.Issuer.authorityChanged()
		now := k.cfg.Issuer.cfg.Now()
		next, err := k.refresh(now)
		var wake <-chan time.Time
		if err != nil {
			wake = rt.failed(ctx, slog.LevelError, "preparing a JWT-SVID key failed", err)
		} else {
			wake = rt.succeeded(now, next)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-wake:
		}
	}
}

// keepJWTKey decides at now whether a key stays published, and until when
// that decision holds: a key of the current or prepared intermediate
// (inUse) until its certificate ends; a retired key until maxTTL after its
// last use, or its certificate's end if sooner; a retired key never used
// not at all.
func keepJWTKey(now time.Time, inUse bool, lastUse, notAfter time.Time, maxTTL time.Duration) (bool, time.Time) {
	end := notAfter
	if !inUse {
		if lastUse.IsZero() {
			return false, time.Time{}
		}
		if last := lastUse.Add(maxTTL); last.Before(end) {
			end = last
		}
	}
	return now.Before(end), end
}

// refresh makes the keys of the current and prepared intermediates,
// drops those keepJWTKey lets go, publishes a changed set, and returns when
// to look again (zero: on the next intermediate change only).
func (k *JWTKeys) refresh(now time.Time) (time.Time, error) {
	s := k.cfg.Issuer.current()
	inUse := []*ca.Authority{s.authority}
	if p := s.prepared; p != nil && p != s.authority && now.Before(p.Certificate.NotAfter) {
		inUse = append(inUse, p)
	}
	var errs []error
	for _, a := range inUse {
		if _, err := k.keyOf(a, now); err != nil {
			errs = append(errs, err)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var next time.Time
	dropped := false
	for a, key := range k.keys {
		keep, until := keepJWTKey(now, slices.Contains(inUse, a), key.lastUsed(), key.notAfter, k.cfg.MaxTTL)
		if !keep {
			delete(k.keys, a)
			dropped = true
			k.cfg.Logger.Info("JWT-SVID key retired", "kid", key.authority.KeyID, "last_use", key.lastUsed(),
				"issuer_serial", trust.SerialHex(a.Certificate.SerialNumber))
			continue
		}
		next = earliest(next, until)
	}
	if dropped {
		k.publishLocked()
	}
	return next, errors.Join(errs...)
}

// signer returns the key to sign with at now: the current intermediate's,
// made (and published) first if it does not exist yet.
func (k *JWTKeys) signer(now time.Time) (*jwtKey, error) {
	return k.keyOf(k.cfg.Issuer.current().authority, now)
}

// keyOf returns the key of a, making and publishing it if there is none.
func (k *JWTKeys) keyOf(a *ca.Authority, now time.Time) (*jwtKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key := k.keys[a]; key != nil {
		return key, nil
	}
	if c := a.Certificate; now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
		return nil, fmt.Errorf("%w: JWT-SVID key: intermediate %s is not valid at %s", ErrUnavailable,
			trust.SerialHex(c.SerialNumber), now.UTC().Format(time.RFC3339))
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate JWT-SVID key: %w", err)
	}
	iss := k.cfg.Issuer.cfg
	cert, err := a.SignJWTSigner(ca.JWTSignerRequest{PublicKey: &priv.PublicKey, Now: now})
	if err != nil {
		return nil, fmt.Errorf("%w: JWT-SVID key certificate: %w", ErrUnavailable, err)
	}
	kid, err := trust.JWTKeyID(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	chain := [][]byte{cert.Raw, a.Certificate.Raw}
	for _, c := range a.Chain {
		chain = append(chain, c.Raw)
	}
	key := &jwtKey{priv: priv, notAfter: cert.NotAfter,
		authority: trust.JWTAuthority{KeyID: kid, PublicKey: &priv.PublicKey, ExpiresAt: cert.NotAfter, Chain: chain}}
	// What agents and the root will check: a key that fails here would
	// sign tokens nobody accepts.
	if err := trust.VerifyJWTAuthority(key.authority, iss.TrustDomain, k.cfg.Issuer.Bundle(), now); err != nil {
		return nil, fmt.Errorf("%w: verify JWT-SVID key: %w", ErrUnavailable, err)
	}
	k.keys[a] = key
	k.publishLocked()
	k.cfg.Logger.Info("JWT-SVID key prepared", "kid", kid, "not_after", cert.NotAfter,
		"issuer_serial", trust.SerialHex(a.Certificate.SerialNumber))
	return key, nil
}

// publishLocked publishes the keys' authorities: newest certificate
// first, so the current intermediate's key leads until its successor is
// prepared. The caller holds mu.
func (k *JWTKeys) publishLocked() {
	out := make([]trust.JWTAuthority, 0, len(k.keys))
	for _, key := range k.keys {
		out = append(out, key.authority)
	}
	slices.SortFunc(out, func(x, y trust.JWTAuthority) int {
		return cmp.Or(y.ExpiresAt.Compare(x.ExpiresAt), cmp.Compare(x.KeyID, y.KeyID))
	})
	k.published.Store(out)
}

// publish hands every new set of authorities to the Publisher until ctx
// is cancelled (see relay).
func (k *JWTKeys) publish(ctx context.Context) {
	relay[[]trust.JWTAuthority]{
		what: "JWT-SVID keys", countKey: "keys",
		current:        k.Current,
		size:           func(as []trust.JWTAuthority) int { return len(as) },
		same:           sameAuthorities,
		send:           k.cfg.Publisher.PublishJWTAuthorities,
		retry:          k.cfg.newRetry(),
		attemptTimeout: k.cfg.AttemptTimeout,
	}.run(ctx)
}

// sameAuthorities reports whether a and b name the same keys in order.
func sameAuthorities(a, b []trust.JWTAuthority) bool {
	return slices.EqualFunc(a, b, func(x, y trust.JWTAuthority) bool { return x.KeyID == y.KeyID && x.ExpiresAt.Equal(y.ExpiresAt) })
}
