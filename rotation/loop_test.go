package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

// runLoop starts a loop inside the current synctest bubble and returns a
// function that stops it and waits for Run to return.
func runLoop(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	}
}

func half() float64 { return 0.5 }

// intervals returns the gaps between consecutive times.
func intervals(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]))
	}
	return out
}

func TestLoopRenewsAtHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeRenewer{ttl: time.Hour}
		start := time.Now()
		stop := runLoop(t, Config{Renewer: r, Jitter: half, Logger: discard()})
		time.Sleep(10*time.Hour + time.Minute) // fake time: ten hours pass in microseconds
		stop()

		calls := r.callTimes()
		if len(calls) == 0 || !calls[0].Equal(start) {
			t.Fatalf("first renewal at %v, want at once (%v)", calls, start)
		}
		// Received at t, a 1h certificate backdated 30 s is renewed at
		// t + 30m exactly with jitter 0.5: 20 renewals in 10 hours.
		if len(calls) != 21 {
			t.Errorf("%d renewals in 10h, want 21 (one at start, then every 30m)", len(calls))
		}
		for i, d := range intervals(calls) {
			if d != 30*time.Minute {
				t.Errorf("interval %d = %v, want 30m", i, d)
			}
		}
	})
}

func TestLoopJitterSpreadsRenewals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeRenewer{ttl: time.Hour}
		stop := runLoop(t, Config{Renewer: r, Logger: discard()}) // real randomness
		time.Sleep(48 * time.Hour)
		stop()
		ivs := intervals(r.callTimes())
		if len(ivs) < 80 {
			t.Fatalf("only %d renewals in 48h", len(ivs))
		}
		lo, hi := ivs[0], ivs[0]
		for _, d := range ivs {
			if d < 24*time.Minute || d > 36*time.Minute {
				t.Errorf("renewal interval %v outside [40%%, 60%%] of 1h", d)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if hi-lo < 2*time.Minute {
			t.Errorf("intervals all within %v..%v: no jitter", lo, hi)
		}
	})
}

func TestLoopRetriesWithExponentialBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unavailable := func(context.Context) (Validity, error) { return Validity{}, errors.New("issuer: Unavailable") }
		r := &fakeRenewer{ttl: time.Hour}
		for range 12 {
			r.steps = append(r.steps, unavailable)
		}
		stop := runLoop(t, Config{Renewer: r, Jitter: half, Logger: discard()})
		time.Sleep(35 * time.Minute)
		stop()

		want := []time.Duration{
			100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
			1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 12800 * time.Millisecond,
			25600 * time.Millisecond, 30 * time.Second, 30 * time.Second, 30 * time.Second,
		}
		got := intervals(r.callTimes())
		if len(got) < len(want) {
			t.Fatalf("retries at intervals %v, want %v", got, want)
		}
		for i, w := range want {
			if got[i] != w {
				t.Errorf("retry %d after %v, want %v", i+1, got[i], w)
			}
		}
		// The 13th call succeeded: the next one is the regular renewal.
		if len(got) != len(want)+1 || got[len(want)] != 30*time.Minute {
			t.Errorf("after recovery: intervals %v, want one 30m renewal after the retries", got[len(want):])
		}
	})
}

func TestLoopRefusedWaitsLong(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := func(context.Context) (Validity, error) {
			return Validity{}, fmt.Errorf("renew: %w: Unauthenticated", ErrRefused)
		}
		r := &fakeRenewer{ttl: time.Hour, steps: []func(context.Context) (Validity, error){refused, refused}}
		var logs testkit.LogBuffer
		stop := runLoop(t, Config{Renewer: r, Jitter: half, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		time.Sleep(11 * time.Minute)
		stop()
		got := intervals(r.callTimes())
		if len(got) != 2 || got[0] != defaultRefusedBackoff || got[1] != defaultRefusedBackoff {
			t.Errorf("intervals after refusals %v, want [5m 5m]", got)
		}
		if !strings.Contains(logs.String(), "refused by the issuer") || !strings.Contains(logs.String(), "level=ERROR") {
			t.Errorf("refusal not logged clearly:\n%s", logs.String())
		}
	})
}

func TestLoopAttemptTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := func(ctx context.Context) (Validity, error) {
			<-ctx.Done()
			return Validity{}, ctx.Err()
		}
		r := &fakeRenewer{ttl: time.Hour, steps: []func(context.Context) (Validity, error){hang}}
		stop := runLoop(t, Config{Renewer: r, Jitter: half, AttemptTimeout: 10 * time.Second, Logger: discard()})
		time.Sleep(time.Minute)
		stop()
		got := intervals(r.callTimes())
		if len(got) != 1 || got[0] != 10*time.Second+100*time.Millisecond {
			t.Errorf("intervals %v, want the hung attempt cut at 10s and retried 100ms later", got)
		}
	})
}

func TestLoopLogsExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeRenewer{ttl: time.Hour}
		var logs testkit.LogBuffer
		stop := runLoop(t, Config{Renewer: r, Jitter: half, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		synctest.Wait()
		r.mu.Lock()
		for range 1000 {
			r.steps = append(r.steps, func(context.Context) (Validity, error) { return Validity{}, errors.New("Unavailable") })
		}
		r.mu.Unlock()
		time.Sleep(2 * time.Hour)
		stop()
		out := logs.String()
		if !strings.Contains(out, "expired=false") || !strings.Contains(out, "expired=true") {
			t.Errorf("failures before and after expiry should say expired=false, then expired=true:\n%s", lastLines(out, 5))
		}
	})
}

func TestLoopStopsWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeRenewer{ttl: 24 * time.Hour}
		stop := runLoop(t, Config{Renewer: r, Logger: discard()})
		synctest.Wait() // renewed once; now waiting ~12h
		before := time.Now()
		stop()
		if time.Since(before) != 0 {
			t.Errorf("stop took %v of fake time", time.Since(before))
		}
		if n := len(r.callTimes()); n != 1 {
			t.Errorf("%d renewals, want 1", n)
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestLoopRenewNow: a delivery on RenewNow renews at once instead of at
// half-life; when that renewal fails, further deliveries do not cut the
// retry backoff short.
func TestLoopRenewNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := func(context.Context) (Validity, error) { return Validity{}, errors.New("issuer unavailable") }
		r := &fakeRenewer{ttl: time.Hour}
		now := make(chan struct{}, 1)
		start := time.Now()
		stop := runLoop(t, Config{Renewer: r, Jitter: half, MinBackoff: time.Second, MaxBackoff: time.Minute, RenewNow: now, Logger: discard()})
		defer stop()
		time.Sleep(time.Minute)
		synctest.Wait()
		r.mu.Lock()
		r.steps = append(r.steps, fail, fail)
		r.mu.Unlock()
		now <- struct{}{}
		synctest.Wait()
		if calls := r.callTimes(); len(calls) != 2 || !calls[1].Equal(start.Add(time.Minute)) {
			t.Fatalf("renewals at %v, want at start and at once after RenewNow (%v)", calls, start.Add(time.Minute))
		}
		// The immediate renewal failed: the retry waits its backoff (1s,
		// then 2s, with jitter 0.5) even though RenewNow delivers again.
		now <- struct{}{}
		synctest.Wait()
		if calls := r.callTimes(); len(calls) != 2 {
			t.Fatalf("%d renewals right after a failure and another RenewNow, want 2 (the backoff holds)", len(calls))
		}
		time.Sleep(10 * time.Second)
		calls := r.callTimes()
		if len(calls) != 4 {
			t.Fatalf("%d renewals 10s after the failure, want 4 (two retries, the second one succeeding)", len(calls))
		}
		if ivs := intervals(calls[1:]); ivs[0] != time.Second || ivs[1] != 2*time.Second {
			t.Errorf("retries after %v, want the backoff [1s 2s]", ivs)
		}
	})
}

// A failed renewal logs when it is retried as a duration ("100ms"), not
// as nanoseconds, in the JSON the agent and issuer log by default.
func TestLoopLogsRetryAsDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeRenewer{ttl: time.Hour, steps: []func(context.Context) (Validity, error){
			func(context.Context) (Validity, error) { return Validity{}, errors.New("issuer: Unavailable") },
		}}
		var logs testkit.LogBuffer
		stop := runLoop(t, Config{Renewer: r, Jitter: half, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		time.Sleep(time.Second)
		stop()
		if out := logs.String(); !strings.Contains(out, `"retry_in":"100ms"`) {
			t.Errorf("retry log line without \"retry_in\":\"100ms\":\n%s", out)
		}
	})
}
