package rotation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Renewer obtains a fresh certificate and starts serving it. It is called by
// one Loop goroutine at a time. On failure it must keep serving what it had:
// the loop only decides when to call it again.
type Renewer interface {
	Renew(ctx context.Context) (Validity, error)
}

// Config configures a Loop.
type Config struct {
	// Renewer is called to renew. Required.
	Renewer Renewer
	// Jitter returns values in [0, 1) that spread renewals and retries; nil
	// means math/rand/v2's Float64.
	Jitter func() float64
	// MinBackoff and MaxBackoff bound the exponential retry delay after a
	// failed renewal; zero means 100 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// RefusedBackoff is the delay after a failure marked ErrRefused; zero
	// means 5 minutes.
	RefusedBackoff time.Duration
	// AttemptTimeout bounds one Renew call; zero means 30 s.
	AttemptTimeout time.Duration
	// RenewNow, when it delivers, makes the loop renew at once instead of
	// waiting for the current certificate's renewal time (the Renewer
	// learnt that the certificate must not be served any longer). While the
	// loop is retrying a failure it keeps that backoff. Nil means never.
	RenewNow <-chan struct{}
	// Logger receives one line per renewal and per failure; nil means
	// slog.Default(). The loop logs errors as Renew returned them, so
	// Renewers must not put secrets in their errors.
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Renewer == nil:
		return errors.New("rotation: renewer is required")
	case c.MinBackoff <= 0 || c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("rotation: backoff bounds [%v, %v] are invalid", c.MinBackoff, c.MaxBackoff)
	case c.RefusedBackoff < 0 || c.AttemptTimeout < 0:
		return errors.New("rotation: durations must not be negative")
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	c.MinBackoff = cmp.Or(c.MinBackoff, defaultMinBackoff)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, defaultMaxBackoff)
	c.RefusedBackoff = cmp.Or(c.RefusedBackoff, defaultRefusedBackoff)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, defaultAttemptTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Loop renews a certificate for as long as it runs: at once when started,
// then at RenewAt of each new certificate, retrying failures with backoff.
type Loop struct {
	cfg Config
	// current is the validity of the last certificate obtained, nil before
	// the first one.
	current *Validity
	// failures counts consecutive failed attempts.
	failures int
}

// New returns a Loop; call Run to start it.
func New(cfg Config) (*Loop, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Loop{cfg: cfg.withDefaults()}, nil
}

// Run renews until ctx is cancelled, then returns nil. It blocks. It
// waits on the time package's timers (tests run it inside a
// testing/synctest bubble, where time is fake).
func (l *Loop) Run(ctx context.Context) error {
	due := time.Now()
	for {
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			case <-l.cfg.RenewNow:
				if l.failures > 0 {
					continue // already retrying; keep the backoff
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		due = l.attempt(ctx)
	}
}

// attempt calls the Renewer once and returns when to try next.
func (l *Loop) attempt(ctx context.Context) time.Time {
	actx, cancel := context.WithTimeout(ctx, l.cfg.AttemptTimeout)
	v, err := l.cfg.Renewer.Renew(actx)
	cancel()
	now := time.Now()
	if err == nil {
		l.failures = 0
		l.current = &v
		next := RenewAt(now, v, l.cfg.Jitter())
		l.cfg.Logger.Info("certificate renewed", "not_after", v.NotAfter, "next_renewal", next)
		return next
	}
	if ctx.Err() != nil {
		return now // shutting down; Run returns
	}
	l.failures++
	delay, refused := RetryDelay(err, l.failures, l.cfg.Jitter(), l.cfg)
	attrs := []any{"error", err.Error(), "failures", l.failures, "retry_in", delay.String()}
	if l.current != nil {
		attrs = append(attrs, "serving_until", l.current.NotAfter, "expired", Expired(now, *l.current))
	} else {
		attrs = append(attrs, "serving", false)
	}
	if refused {
		l.cfg.Logger.Error("certificate renewal refused by the issuer; retrying slowly: fix the credential or the identity's policy", attrs...)
	} else {
		l.cfg.Logger.Warn("certificate renewal failed; retrying", attrs...)
	}
	return now.Add(delay)
}
