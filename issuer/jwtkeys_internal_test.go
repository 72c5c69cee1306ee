package issuer

import (
	"testing"
	"time"
)

func TestKeepJWTKey(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	notAfter := t0.Add(10 * time.Hour)
	const maxTTL = time.Hour
	for _, tc := range []struct {
		name      string
		now       time.Time
		inUse     bool
		lastUse   time.Time
		keep      bool
		wantUntil time.Time
	}{
		{"in use, never used", t0, true, time.Time{}, true, notAfter},
		{"in use, certificate ended", notAfter, true, t0, false, notAfter},
		{"retired, never used", t0, false, time.Time{}, false, time.Time{}},
		{"retired, tokens may live", t0.Add(59 * time.Minute), false, t0, true, t0.Add(maxTTL)},
		{"retired, last token expired", t0.Add(maxTTL), false, t0, false, t0.Add(maxTTL)},
		{"retired near the certificate's end", notAfter.Add(-time.Minute), false, notAfter.Add(-2 * time.Minute), true, notAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep, until := keepJWTKey(tc.now, tc.inUse, tc.lastUse, notAfter, maxTTL)
			if keep != tc.keep || !until.Equal(tc.wantUntil) {
				t.Errorf("keepJWTKey = %v until %v, want %v until %v", keep, until, tc.keep, tc.wantUntil)
			}
		})
	}
}

func TestJWTLifetime(t *testing.T) {
	for _, tc := range []struct {
		ttl, want time.Duration
		err       bool
	}{
		{0, 5 * time.Minute, false},
		{time.Minute, time.Minute, false},
		{2 * time.Hour, time.Hour, false},
		{-time.Second, 0, true},
	} {
		got, err := jwtLifetime(tc.ttl, 5*time.Minute, time.Hour)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("jwtLifetime(%v) = %v, %v; want %v, error %v", tc.ttl, got, err, tc.want, tc.err)
		}
	}
}
