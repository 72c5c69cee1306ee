package issuer

import (
	"context"
	"log/slog"
	"time"
)

// republishInterval is how often an issuer sends what it relays to the
// root (its CRLs, its JWT-SVID keys) again while nothing changed: the root
// keeps relayed CRLs in memory only, so a restarted root has them back
// soon.
const republishInterval = time.Minute

// relay hands each new value of an issuer's own state to the root until
// ctx is cancelled: it sends when the value changes, retries failures with
// backoff (a newer value replaces one still being retried), and sends an
// unchanged value again every republishInterval. An empty value is never
// sent. The agents of the issuer's own cluster get the value with the
// bundle whether or not the root has it, which is why a failure is only
// logged.
type relay[T any] struct {
	// what names the value in logs ("CRLs"); countKey is the log key of
	// its size.
	what, countKey string
	// current returns the value and a channel closed when it changes.
	current func() (T, <-chan struct{})
	// size is the value's number of items; zero means nothing to send.
	size func(T) int
	// same reports whether two values need no second send.
	same func(a, b T) bool
	// send hands a value to the root.
	send func(context.Context, T) error

	// retry paces the sends after a failure; its logger also receives
	// the successes.
	retry          retry
	attemptTimeout time.Duration
}

func (r relay[T]) run(ctx context.Context) {
	var sent, logged T
	var haveSent, haveLogged bool
	for {
		v, changed := r.current()
		var wake <-chan time.Time
		if r.size(v) > 0 && (!haveSent || !r.same(v, sent)) {
			actx, cancel := context.WithTimeout(ctx, r.attemptTimeout)
			err := r.send(actx, v)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				wake = r.retry.failed(ctx, slog.LevelWarn,
					"publishing "+r.what+" to the root failed; agents of this cluster have them already", err)
			default:
				if !haveLogged || !r.same(v, logged) {
					r.retry.logger.Info(r.what+" published to the root", r.countKey, r.size(v))
				}
				sent, logged, haveSent, haveLogged, r.retry.failures = v, v, true, true, 0
			}
		}
		if wake == nil && r.size(v) > 0 {
			wake = time.After(republishInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-wake:
			if r.retry.failures == 0 {
				haveSent = false
			}
		}
	}
}
