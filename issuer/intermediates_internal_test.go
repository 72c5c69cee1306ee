package issuer

import (
	"testing"
	"time"

	"github.com/meshca/meshca/rotation"
)

func TestRotationStateNext(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// 60 min of life: prepare at +30m, activate at +50m.
	cur := rotation.Validity{NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	prepare, activate := t0.Add(30*time.Minute), t0.Add(50*time.Minute)
	r1, r2 := [32]byte{1}, [32]byte{2}
	for _, tc := range []struct {
		name string
		s    rotationState
		now  time.Time
		step rotationStep
		at   time.Time
	}{
		{"fresh: wait for half-life", rotationState{current: cur, currentRoot: r1, activeRoot: r1}, t0.Add(time.Minute), stepWait, prepare},
		{"half-life: renew", rotationState{current: cur, currentRoot: r1, activeRoot: r1}, prepare, stepRenew, prepare},
		{"active root unknown", rotationState{current: cur, currentRoot: r1}, t0.Add(time.Minute), stepWait, prepare},
		{"prepared: wait for 1/6", rotationState{current: cur, currentRoot: r1, activeRoot: r1, hasNext: true, nextRoot: r1}, prepare, stepWait, activate},
		{"1/6: activate", rotationState{current: cur, currentRoot: r1, activeRoot: r1, hasNext: true, nextRoot: r1}, activate, stepActivate, activate},
		{"expired, none prepared: renew", rotationState{current: cur, currentRoot: r1, activeRoot: r1}, t0.Add(2 * time.Hour), stepRenew, t0.Add(2 * time.Hour)},
		{"failing: wait for the retry", rotationState{current: cur, currentRoot: r1, activeRoot: r1, retryAt: prepare.Add(time.Second)}, prepare, stepWait, prepare.Add(time.Second)},
		{"root moved: renew at once", rotationState{current: cur, currentRoot: r1, activeRoot: r2}, t0.Add(time.Minute), stepRenew, t0.Add(time.Minute)},
		{"root moved, failing: wait for the retry", rotationState{current: cur, currentRoot: r1, activeRoot: r2, retryAt: t0.Add(2 * time.Minute)}, t0.Add(time.Minute), stepWait, t0.Add(2 * time.Minute)},
		{"root moved, prepared under it: activate at once", rotationState{current: cur, currentRoot: r1, activeRoot: r2, hasNext: true, nextRoot: r2}, t0.Add(time.Minute), stepActivate, t0.Add(time.Minute)},
		{"root moved, prepared under the old: renew", rotationState{current: cur, currentRoot: r1, activeRoot: r2, hasNext: true, nextRoot: r1}, t0.Add(time.Minute), stepRenew, t0.Add(time.Minute)},
		{"root moved but settled: normal schedule", rotationState{current: cur, currentRoot: r1, activeRoot: r2, settled: r2, hasNext: true, nextRoot: r1}, t0.Add(time.Minute), stepWait, activate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			step, at := tc.s.next(tc.now)
			if step != tc.step || !at.Equal(tc.at) {
				t.Errorf("next(%v) = %v at %v, want %v at %v", tc.now.Sub(t0), step, at.Sub(t0), tc.step, tc.at.Sub(t0))
			}
		})
	}
}
