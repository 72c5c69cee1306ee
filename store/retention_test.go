package store_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/store"
)

// fakePruner records the cutoffs it was asked for and fails while err is set.
type fakePruner struct {
	mu      sync.Mutex
	cutoffs []time.Time
	err     error
}

var _ store.Pruner = (*fakePruner)(nil)

func (f *fakePruner) PruneCertificates(_ context.Context, before time.Time) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cutoffs = append(f.cutoffs, before)
	if f.err != nil {
		return 0, f.err
	}
	return 3, nil
}

func (f *fakePruner) calls() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cutoffs)
}

func (f *fakePruner) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// RunRetention prunes at once and then every Interval, with the cutoff
// Grace before now; a failing prune does not stop it; cancelling stops it.
// Time is synctest's fake clock, so the hours pass instantly.
func TestRunRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const grace, interval = 48 * time.Hour, time.Hour
		p := &fakePruner{err: errors.New("database is down")}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			done <- store.RunRetention(ctx, p, store.RetentionConfig{
				Grace: grace, Interval: interval, Logger: slog.New(slog.DiscardHandler),
			})
		}()
		synctest.Wait()
		if got := p.calls(); len(got) != 1 || !got[0].Equal(start.Add(-grace)) {
			t.Fatalf("after start: cutoffs %v, want [%v]", got, start.Add(-grace))
		}
		p.setErr(nil) // the first prune failed; the job goes on
		time.Sleep(interval)
		synctest.Wait()
		time.Sleep(interval)
		synctest.Wait()
		want := []time.Time{start.Add(-grace), start.Add(interval - grace), start.Add(2*interval - grace)}
		if got := p.calls(); !slices.EqualFunc(got, want, time.Time.Equal) {
			t.Fatalf("cutoffs %v, want %v", got, want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("RunRetention = %v, want nil after cancel", err)
		}
	})
}

func TestRetentionConfigValidate(t *testing.T) {
	for _, cfg := range []store.RetentionConfig{{Grace: -time.Second}, {Interval: -time.Second}} {
		if err := store.RunRetention(t.Context(), &fakePruner{}, cfg); err == nil {
			t.Errorf("RunRetention(%+v) = nil, want a validation error", cfg)
		}
	}
}
