package rotation

import (
	"context"
	"sync"
	"time"
)

// fakeRenewer answers each Renew call with the next scripted step, or with a
// fresh certificate of lifetime ttl once the script is exhausted. It records
// when it was called.
type fakeRenewer struct {
	ttl time.Duration

	mu    sync.Mutex
	steps []func(ctx context.Context) (Validity, error)
	calls []time.Time
}

var _ Renewer = (*fakeRenewer)(nil)

func (f *fakeRenewer) Renew(ctx context.Context) (Validity, error) {
	f.mu.Lock()
	f.calls = append(f.calls, time.Now())
	var step func(context.Context) (Validity, error)
	if len(f.steps) > 0 {
		step, f.steps = f.steps[0], f.steps[1:]
	}
	f.mu.Unlock()
	if step != nil {
		return step(ctx)
	}
	return issue(f.ttl), nil
}

// callTimes returns the times Renew was called.
func (f *fakeRenewer) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

// issue returns the validity of a certificate issued now, backdated 30 s as
// meshca's issuer does.
func issue(ttl time.Duration) Validity {
	now := time.Now()
	return Validity{NotBefore: now.Add(-30 * time.Second), NotAfter: now.Add(ttl)}
}
