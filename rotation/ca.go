package rotation

import "time"

// Renewal of meshca's CA certificates: the central root's roots when it
// rotates them by itself, and meshca's CA certificate under an upstream
// PKI (the central root's and a standalone issuer's alike).

// MaxCABackoff is the longest wait between failed requests for a CA
// certificate, and the wait after a refusal.
const MaxCABackoff = time.Hour

// CADue reports whether a CA certificate with validity v is due for
// renewal at now: less than a third of its life is left. For the 90 days
// an upstream PKI issues by default that leaves a month of retries while
// the upstream is unreachable.
func CADue(now time.Time, v Validity) bool { return now.After(CADueAt(v)) }

// CADueAt is when a CA certificate with validity v becomes due (CADue).
func CADueAt(v Validity) time.Time { return v.NotAfter.Add(-v.NotAfter.Sub(v.NotBefore) / 3) }

// CARetry is the backoff between failed requests for a CA certificate
// (RetryDelay): from minBackoff doubling up to an hour, and an hour after
// a refusal, which only a change of the upstream's configuration cures.
func CARetry(minBackoff time.Duration) Config {
	return Config{MinBackoff: minBackoff, MaxBackoff: MaxCABackoff, RefusedBackoff: MaxCABackoff}
}
