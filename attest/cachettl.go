package attest

import "time"

// Cache lifetimes of attestation results.
const (
	// defaultCacheTTL is how long a result is reused when nothing shorter
	// applies (NewCached's default).
	defaultCacheTTL = 5 * time.Minute
	// tokenReviewCacheTTL is the default in front of a TokenReview
	// attestor: a token the API server revokes is accepted at most that
	// much longer, which is the point of asking the API server.
	tokenReviewCacheTTL = 10 * time.Second
)

// CacheTTL is the cache lifetime for an attestor: ttl when positive, else
// TokenReviewCacheTTL in front of a TokenReview attestor (tokenReview) and
// DefaultCacheTTL in front of any other.
func CacheTTL(ttl time.Duration, tokenReview bool) time.Duration {
	switch {
	case ttl > 0:
		return ttl
	case tokenReview:
		return tokenReviewCacheTTL
	default:
		return defaultCacheTTL
	}
}
