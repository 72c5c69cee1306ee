package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Pruner deletes the records of certificates that have expired. Backends
// implement it next to Store; audit events are never pruned, because the
// audit chain must stay whole.
type Pruner interface {
	// PruneCertificates deletes the certificates whose NotAfter is strictly
	// before expiredBefore and returns how many it deleted. It deletes in
	// bounded chunks, so it never holds long locks.
	PruneCertificates(ctx context.Context, expiredBefore time.Time) (int64, error)
}

// Retention defaults.
const (
	defaultRetentionGrace    = 7 * 24 * time.Hour
	defaultRetentionInterval = time.Hour
)

// RetentionConfig configures [RunRetention].
type RetentionConfig struct {
	// Grace is how long a certificate's record is kept after the
	// certificate expired. Zero means DefaultRetentionGrace (7 days).
	Grace time.Duration
	// Interval is the time between two prunes; the first runs at once.
	// Zero means DefaultRetentionInterval (1h).
	Interval time.Duration
	// Logger receives one line per prune that deleted something or failed;
	// nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports whether c is usable.
func (c RetentionConfig) Validate() error {
	if c.Grace < 0 {
		return fmt.Errorf("retention: negative grace %v", c.Grace)
	}
	if c.Interval < 0 {
		return fmt.Errorf("retention: negative interval %v", c.Interval)
	}
	return nil
}

// RunRetention prunes the records of certificates that expired more than
// Grace ago, at once and then every Interval, until ctx is done; then it
// returns nil. A prune that fails (the database is down, say) is logged and
// tried again at the next tick: retention is housekeeping and must not stop
// anything else. It returns an error only for an invalid cfg.
func RunRetention(ctx context.Context, p Pruner, cfg RetentionConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Grace == 0 {
		cfg.Grace = defaultRetentionGrace
	}
	if cfg.Interval == 0 {
		cfg.Interval = defaultRetentionInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		pruneOnce(ctx, p, cfg)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func pruneOnce(ctx context.Context, p Pruner, cfg RetentionConfig) {
	cutoff := time.Now().Add(-cfg.Grace)
	n, err := p.PruneCertificates(ctx, cutoff)
	switch {
	case err != nil && ctx.Err() == nil:
		cfg.Logger.Warn("prune expired certificates", "expired_before", cutoff, "deleted", n, "error", err)
	case n > 0:
		cfg.Logger.Info("pruned expired certificates", "expired_before", cutoff, "deleted", n)
	}
}
