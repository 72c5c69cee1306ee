package attest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxTokenSize is the largest token, in bytes, that [JWKS.Attest] will parse.
// Real projected service-account tokens are 1–2 KiB; the limit bounds the work
// an unauthenticated caller can make us do.
const MaxTokenSize = 16 << 10

// maxLeeway is the largest clock-skew allowance [JWKSConfig.Validate] accepts.
const maxLeeway = 60 * time.Second

// defaultLeeway is the clock-skew allowance used when [JWKSConfig.Leeway] is zero.
const defaultLeeway = 30 * time.Second

var (
	defaultAudiences = []string{"meshca", "istio-ca"}
	// asymmetricAlgorithms is both the default and the ceiling for
	// JWKSConfig.Algorithms: never "none", never HMAC.
	asymmetricAlgorithms = []jose.SignatureAlgorithm{
		jose.RS256, jose.RS384, jose.RS512,
		jose.ES256, jose.ES384, jose.ES512,
		jose.PS256, jose.PS384, jose.PS512,
		jose.EdDSA,
	}
)

// KeySource supplies the public keys that sign acceptable tokens, typically
// the key set a Kubernetes API server publishes at /openid/v1/jwks.
//
// Keys is called on every [JWKS.Attest], so implementations that fetch
// remotely must cache. An error means "the keys are not known right now" and
// makes Attest fail with [ErrUnavailable]; it must not be used to reject a
// token. The returned set is only read, never modified, and must not be
// modified by the source afterwards (publish a new set instead).
type KeySource interface {
	Keys(ctx context.Context) (*jose.JSONWebKeySet, error)
}

// keyRefresher is an optional keySource capability. When a token names a
// key ID the current set lacks (the signer rotated its key), [JWKS] calls
// Refresh once and retries with the set it returns. Implementations rate-limit
// refreshes themselves and return the set they already had when they do
// not fetch.
type keyRefresher interface {
	Refresh(ctx context.Context) (*jose.JSONWebKeySet, error)
}

// StaticKeys is a keySource that always returns Set. A nil Set is an error
// (a misconfiguration), reported as unavailability rather than rejection.
type StaticKeys struct {
	Set *jose.JSONWebKeySet
}

var _ KeySource = StaticKeys{}

// Keys returns s.Set.
func (s StaticKeys) Keys(context.Context) (*jose.JSONWebKeySet, error) {
	if s.Set == nil {
		return nil, errors.New("static key set is nil")
	}
	return s.Set, nil
}

// JWKSConfig configures a [JWKS] attestor.
type JWKSConfig struct {
	// Issuer is the required value of the token's "iss" claim: the API
	// server's --service-account-issuer. Required.
	Issuer string

	// Audiences lists accepted "aud" values; a token is accepted when its
	// audiences intersect this list. Empty means "meshca" and "istio-ca".
	Audiences []string

	// Keys supplies the verification keys. Required.
	Keys KeySource

	// Algorithms is the allow list of JWS "alg" values. Empty means all of
	// RS256/384/512, ES256/384/512, PS256/384/512 and EdDSA, which is also
	// the ceiling: "none" and HMAC algorithms are rejected by Validate.
	Algorithms []jose.SignatureAlgorithm

	// Leeway is the clock-skew allowance for "exp", "nbf" and "iat".
	// Zero means DefaultLeeway (30s); it must not be negative or exceed
	// MaxLeeway (60s).
	Leeway time.Duration

	// Cluster names the cluster whose tokens this attestor verifies. It is
	// copied into [Identity.Cluster], and a [Request] naming a different
	// non-empty ClusterID is rejected. Empty is a valid name (single cluster).
	Cluster string
}

// Validate reports whether c is usable. Zero values that have defaults are
// valid; Validate does not call c.Keys.
func (c JWKSConfig) Validate() error {
	if c.Issuer == "" {
		return errors.New("jwks attestor: issuer is required")
	}
	if c.Keys == nil {
		return errors.New("jwks attestor: key source is required")
	}
	for _, aud := range c.Audiences {
		if aud == "" {
			return errors.New("jwks attestor: empty audience")
		}
	}
	for _, alg := range c.Algorithms {
		if !slices.Contains(asymmetricAlgorithms, alg) {
			return fmt.Errorf("jwks attestor: signature algorithm %q not allowed", alg)
		}
	}
	if c.Leeway < 0 || c.Leeway > maxLeeway {
		return fmt.Errorf("jwks attestor: leeway %s outside [0, %s]", c.Leeway, maxLeeway)
	}
	return nil
}

// withDefaults returns a copy of c with defaults applied. Slices are cloned
// so that the caller cannot change a running attestor's policy.
func (c JWKSConfig) withDefaults() JWKSConfig {
	c.Audiences = slices.Clone(c.Audiences)
	if len(c.Audiences) == 0 {
		c.Audiences = slices.Clone(defaultAudiences)
	}
	c.Algorithms = slices.Clone(c.Algorithms)
	if len(c.Algorithms) == 0 {
		c.Algorithms = slices.Clone(asymmetricAlgorithms)
	}
	if c.Leeway == 0 {
		c.Leeway = defaultLeeway
	}
	return c
}

// JWKS attests Kubernetes projected service-account tokens by verifying them
// locally against a key set, without calling the API server. It does not see
// revocation: a token stays valid until it expires even if its pod is
// deleted, which is why tokens should be short-lived and pod-bound.
//
// A JWKS is safe for concurrent use.
type JWKS struct {
	cfg JWKSConfig
}

var _ Attestor = (*JWKS)(nil)

// NewJWKS applies defaults to cfg, validates it and returns the attestor.
func NewJWKS(cfg JWKSConfig) (*JWKS, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &JWKS{cfg: cfg}, nil
}

// Attest verifies req.Token's signature against the configured key set and
// its claims against the configured policy. Errors wrap [ErrUnauthenticated]
// when the token is rejected and [ErrUnavailable] when the key source fails;
// the rest of the message is a reason meant for logs, never for callers.
func (a *JWKS) Attest(ctx context.Context, req Request) (Identity, error) {
	return a.attestAt(ctx, req, time.Now())
}

// attestAt is Attest with the token's times checked against now (tests and
// the committed fuzz seeds hold tokens dated at a fixed instant).
func (a *JWKS) attestAt(ctx context.Context, req Request, now time.Time) (Identity, error) {
	if err := checkRequest(req, a.cfg.Cluster); err != nil {
		return Identity{}, err
	}
	// ParseSignedCompact enforces the algorithm allow list, so "none" and
	// HMAC tokens never reach key selection.
	jws, err := jose.ParseSignedCompact(req.Token, a.cfg.Algorithms)
	if badAlg := (*jose.ErrUnexpectedSignatureAlgorithm)(nil); errors.As(err, &badAlg) {
		return Identity{}, fmt.Errorf("%w: token algorithm %q not allowed", ErrUnauthenticated, clip(string(badAlg.Got)))
	}
	if err != nil {
		return Identity{}, fmt.Errorf("%w: malformed token: %w", ErrUnauthenticated, err)
	}
	keys, err := a.cfg.Keys.Keys(ctx)
	if err == nil && keys == nil {
		err = errors.New("key source returned no key set")
	}
	if err != nil {
		return Identity{}, fmt.Errorf("%w: load token keys: %w", ErrUnavailable, err)
	}
	payload, err := verifySignature(jws, keys)
	if r, ok := a.cfg.Keys.(keyRefresher); ok && err != nil && unknownKeyID(jws, keys) {
		if fresh, rerr := r.Refresh(ctx); rerr == nil && fresh != nil && fresh != keys {
			payload, err = verifySignature(jws, fresh)
		}
	}
	if err != nil {
		return Identity{}, err
	}
	return parseClaims(payload, &a.cfg, now)
}

// verifySignature returns the payload of jws if its single signature verifies
// under a key of set: the key named by "kid" when the header has one, else
// any key. Keys that are not usable public signing keys for the token's
// algorithm are skipped, so a symmetric or private key slipped into the set
// can never be used.
func verifySignature(jws *jose.JSONWebSignature, set *jose.JSONWebKeySet) ([]byte, error) {
	if len(jws.Signatures) != 1 {
		// Compact serialization always has exactly one; be explicit anyway.
		return nil, fmt.Errorf("%w: token has %d signatures", ErrUnauthenticated, len(jws.Signatures))
	}
	hdr := jws.Signatures[0].Header
	tried := 0
	for i := range set.Keys {
		k := &set.Keys[i]
		if hdr.KeyID != "" && k.KeyID != hdr.KeyID {
			continue
		}
		if !usableKey(k, hdr.Algorithm) {
			continue
		}
		tried++
		if payload, err := jws.Verify(k); err == nil {
			return payload, nil
		}
	}
	switch {
	case hdr.KeyID != "" && tried == 0:
		return nil, fmt.Errorf("%w: no %s key with kid %q", ErrUnauthenticated, clip(hdr.Algorithm), clip(hdr.KeyID))
	case tried == 0:
		return nil, fmt.Errorf("%w: no %s key to verify token", ErrUnauthenticated, clip(hdr.Algorithm))
	default:
		return nil, fmt.Errorf("%w: token signature does not verify (kid %q, %d keys tried)", ErrUnauthenticated, clip(hdr.KeyID), tried)
	}
}

// unknownKeyID reports whether jws names a key ID that set does not hold.
func unknownKeyID(jws *jose.JSONWebSignature, set *jose.JSONWebKeySet) bool {
	if len(jws.Signatures) != 1 {
		return false
	}
	kid := jws.Signatures[0].Header.KeyID
	return kid != "" && len(set.Key(kid)) == 0
}

// usableKey reports whether k may verify a signature made with alg.
func usableKey(k *jose.JSONWebKey, alg string) bool {
	if !k.IsPublic() || !k.Valid() {
		return false
	}
	if k.Use != "" && k.Use != "sig" {
		return false
	}
	return k.Algorithm == "" || k.Algorithm == alg
}

// checkRequest refuses, before any key or API server is asked, a request
// for a cluster other than cluster (an empty ClusterID means cluster) and
// an empty or oversized token. Errors wrap [ErrUnauthenticated].
func checkRequest(req Request, cluster string) error {
	if req.ClusterID != "" && req.ClusterID != cluster {
		return because(ErrUnknownCluster, fmt.Errorf("%w: unknown cluster %q", ErrUnauthenticated, clip(req.ClusterID)))
	}
	switch {
	case req.Token == "":
		return fmt.Errorf("%w: empty token", ErrUnauthenticated)
	case len(req.Token) > MaxTokenSize:
		return fmt.Errorf("%w: token is %d bytes, limit %d", ErrUnauthenticated, len(req.Token), MaxTokenSize)
	}
	return nil
}

// clip bounds attacker-controlled strings quoted into log reasons.
func clip(s string) string {
	const limit = 128
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
