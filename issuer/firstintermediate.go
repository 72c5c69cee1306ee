package issuer

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
)

// FirstIntermediate is NewIntermediate for a starting issuer: while the
// root is unreachable it retries, with exponential backoff and jitter
// between MinBackoff and MaxBackoff; a refusal (ErrRejected) is final, as
// is the end of ctx.
func (u *Upstream) FirstIntermediate(ctx context.Context) (*ca.Authority, *trust.TrustBundle, error) {
	for failures := 1; ; failures++ {
		a, tb, err := u.NewIntermediate(ctx)
		if err == nil || errors.Is(err, ErrRejected) || ctx.Err() != nil {
			return a, tb, err
		}
		delay := rotation.Backoff(failures, rand.Float64(), u.cfg.MinBackoff, u.cfg.MaxBackoff)
		u.cfg.Logger.Warn("cannot reach the root to obtain an intermediate; retrying", "root", u.cfg.Address,
			"error", err.Error(), "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-t.C:
		}
	}
}
