package issuer

import (
	"context"
	"log/slog"
	"time"

	"github.com/meshca/meshca/rotation"
)

// retry paces a loop that keeps what it has when an attempt fails and
// tries again after rotation.Backoff: the CRL signer's, the JWT key
// keeper's and a relay's. It is owned by that loop's goroutine.
type retry struct {
	jitter             func() float64
	minDelay, maxDelay time.Duration
	logger             *slog.Logger
	// failures counts the consecutive failed attempts; zero after a
	// success and before the first attempt.
	failures int
}

// failed counts err as one more failure, logs it at level with msg, the
// count and the delay, and returns a channel that delivers when the next
// attempt is due.
func (r *retry) failed(ctx context.Context, level slog.Level, msg string, err error) <-chan time.Time {
	r.failures++
	delay := rotation.Backoff(r.failures, r.jitter(), r.minDelay, r.maxDelay)
	r.logger.Log(ctx, level, msg, "error", err.Error(), "failures", r.failures, "retry_in", delay.String())
	return time.After(delay)
}

// succeeded resets the count and returns a channel that delivers at next,
// as seen at now; nil (never delivers) when next is zero.
func (r *retry) succeeded(now, next time.Time) <-chan time.Time {
	r.failures = 0
	if next.IsZero() {
		return nil
	}
	return time.After(next.Sub(now))
}
