package rotation

import (
	"errors"
	"math"
	"time"
)

// Schedule constants. A certificate is renewed once RenewFraction of its
// lifetime has passed, moved earlier or later by up to JitterFraction of the
// lifetime so that a fleet issued at once does not renew at once.
const (
	renewFraction  = 0.5
	jitterFraction = 0.1
)

// Backoff defaults (see Config).
const (
	defaultMinBackoff     = 100 * time.Millisecond
	defaultMaxBackoff     = 30 * time.Second
	defaultRefusedBackoff = 5 * time.Minute
	// defaultAttemptTimeout bounds one Renew call (see Config).
	defaultAttemptTimeout = 30 * time.Second
	// backoffJitter spreads each retry delay over ±20% of itself.
	backoffJitter = 0.2
)

// ErrRefused marks a renewal failure that retrying soon cannot fix: the
// issuer refused the request (bad credential, identity not allowed, request
// rejected). Renewers wrap such errors with it; the loop then waits
// RefusedBackoff instead of backing off exponentially.
var ErrRefused = errors.New("refused by the issuer")

// Validity is a certificate's lifetime.
type Validity struct {
	NotBefore, NotAfter time.Time
}

// RenewAt returns when to renew a certificate with validity v that was
// obtained at now. jitter ∈ [0, 1) picks the point in the window: 0 gives 40%
// of the lifetime, 0.5 gives 50%, values near 1 give 60%.
//
// The lifetime counts from the later of NotBefore and now: issuers backdate
// NotBefore to tolerate clock skew, and that margin must not eat into the
// renewal window (with a 30 s backdate, a 40 s certificate would otherwise
// be "due" the moment it arrives). The result is never before now.
func RenewAt(now time.Time, v Validity, jitter float64) time.Time {
	start := v.NotBefore
	if now.After(start) {
		start = now
	}
	life := v.NotAfter.Sub(start)
	if life <= 0 {
		return now
	}
	frac := renewFraction + jitterFraction*(2*clampUnit(jitter)-1)
	return start.Add(time.Duration(float64(life) * frac))
}

// Backoff returns how long to wait after the failures-th consecutive failure
// (failures ≥ 1): min·2^(failures−1), capped at max, then spread by ±20%
// with jitter ∈ [0, 1) and kept within [min, max].
func Backoff(failures int, jitter float64, minDelay, maxDelay time.Duration) time.Duration {
	d := minDelay
	for i := 1; i < failures && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	d = time.Duration(float64(d) * (1 + backoffJitter*(2*clampUnit(jitter)-1)))
	return min(max(d, minDelay), maxDelay)
}

// RetryDelay returns how long to wait before retrying a renewal that failed
// with err, the failures-th failure in a row: RefusedBackoff (±20%) when err
// is ErrRefused, exponential Backoff otherwise. refused reports which.
func RetryDelay(err error, failures int, jitter float64, cfg Config) (delay time.Duration, refused bool) {
	cfg = cfg.withDefaults()
	if errors.Is(err, ErrRefused) {
		return time.Duration(float64(cfg.RefusedBackoff) * (1 + backoffJitter*(2*clampUnit(jitter)-1))), true
	}
	return Backoff(failures, jitter, cfg.MinBackoff, cfg.MaxBackoff), false
}

// Expired reports whether a certificate with validity v can no longer be
// served at now.
func Expired(now time.Time, v Validity) bool { return !now.Before(v.NotAfter) }

func clampUnit(x float64) float64 {
	switch {
	case x < 0:
		return 0
	case x >= 1:
		return math.Nextafter(1, 0)
	}
	return x
}
