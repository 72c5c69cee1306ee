package rotation

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func TestRenewAt(t *testing.T) {
	hour := Validity{NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	for _, tc := range []struct {
		name   string
		now    time.Time
		v      Validity
		jitter float64
		want   time.Time
	}{
		{"middle of the window", t0, hour, 0.5, t0.Add(30 * time.Minute)},
		{"earliest", t0, hour, 0, t0.Add(24 * time.Minute)},
		{"latest", t0, hour, 0.9999999, t0.Add(36 * time.Minute)},
		{"jitter out of range is clamped", t0, hour, 7, t0.Add(36 * time.Minute)},
		{"negative jitter is clamped", t0, hour, -1, t0.Add(24 * time.Minute)},
		// 30 s of backdating must not count: received at t0+30s, life 1h.
		{"backdated certificate", t0.Add(30 * time.Second), hour, 0.5, t0.Add(30*time.Second + 29*time.Minute + 45*time.Second)},
		// A 40 s certificate backdated 30 s is renewed 20 s after receipt,
		// not at once.
		{"short backdated certificate", t0.Add(30 * time.Second), Validity{t0, t0.Add(70 * time.Second)}, 0.5, t0.Add(50 * time.Second)},
		{"already expired", t0.Add(2 * time.Hour), hour, 0.5, t0.Add(2 * time.Hour)},
		{"expires exactly now", t0.Add(time.Hour), hour, 0.5, t0.Add(time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RenewAt(tc.now, tc.v, tc.jitter)
			// Jitter just below 1 and float arithmetic move it slightly.
			if d := got.Sub(tc.want); d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("RenewAt = %v, want %v", got, tc.want)
			}
			if got.Before(tc.now) {
				t.Errorf("RenewAt = %v is before now %v", got, tc.now)
			}
		})
	}
}

func TestRenewAtWindow(t *testing.T) {
	v := Validity{NotBefore: t0, NotAfter: t0.Add(24 * time.Hour)}
	for i := range 1000 {
		j := float64(i) / 1000
		at := RenewAt(t0, v, j)
		if at.Before(t0.Add(9*time.Hour+36*time.Minute)) || at.After(t0.Add(14*time.Hour+24*time.Minute)) {
			t.Fatalf("jitter %v: RenewAt = +%v, want within [40%%, 60%%] of 24h", j, at.Sub(t0))
		}
	}
}

func TestBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 30 * time.Second
	for _, tc := range []struct {
		failures int
		jitter   float64
		want     time.Duration
	}{
		{1, 0.5, 100 * time.Millisecond},
		{2, 0.5, 200 * time.Millisecond},
		{3, 0.5, 400 * time.Millisecond},
		{9, 0.5, 25600 * time.Millisecond},
		{10, 0.5, 30 * time.Second},
		{1000, 0.5, 30 * time.Second},
		{1, 0, 100 * time.Millisecond}, // -20% would be 80 ms: clamped to min
		{3, 0, 320 * time.Millisecond}, // -20%
		{3, 0.99999, 480*time.Millisecond - 4*time.Microsecond},
		{12, 0, 24 * time.Second},       // -20% of the cap
		{12, 0.99999, 30 * time.Second}, // +20% of the cap: clamped
	} {
		t.Run(fmt.Sprintf("failures=%d,jitter=%v", tc.failures, tc.jitter), func(t *testing.T) {
			got := Backoff(tc.failures, tc.jitter, lo, hi)
			if d := got - tc.want; d < -10*time.Microsecond || d > 10*time.Microsecond {
				t.Errorf("Backoff = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	cfg := Config{}
	refused := fmt.Errorf("renew: %w: %w", ErrRefused, errors.New("Unauthenticated"))
	for _, tc := range []struct {
		name        string
		err         error
		failures    int
		want        time.Duration
		wantRefused bool
	}{
		{"unavailable, first", errors.New("Unavailable"), 1, 100 * time.Millisecond, false},
		{"unavailable, fourth", errors.New("Unavailable"), 4, 800 * time.Millisecond, false},
		{"refused", refused, 1, defaultRefusedBackoff, true},
		{"refused, many times", refused, 50, defaultRefusedBackoff, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, isRefused := RetryDelay(tc.err, tc.failures, 0.5, cfg)
			if got != tc.want || isRefused != tc.wantRefused {
				t.Errorf("RetryDelay = %v, %v; want %v, %v", got, isRefused, tc.want, tc.wantRefused)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	v := Validity{NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	if Expired(t0.Add(time.Hour-time.Nanosecond), v) {
		t.Error("expired a nanosecond before NotAfter")
	}
	if !Expired(t0.Add(time.Hour), v) {
		t.Error("not expired at NotAfter")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Renewer: &fakeRenewer{}}, true},
		{"no renewer", Config{}, false},
		{"min above max", Config{Renewer: &fakeRenewer{}, MinBackoff: time.Minute, MaxBackoff: time.Second}, false},
		{"negative timeout", Config{Renewer: &fakeRenewer{}, AttemptTimeout: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &Config{}, &Config{Renewer: &fakeRenewer{}}, &Config{Renewer: &fakeRenewer{}, MinBackoff: time.Minute, MaxBackoff: time.Second})
}
