package root_test

import (
	"testing"
	"time"

	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// t0 is the fixed instant the root-state tests start from.
var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func TestRootStatesLifecycle(t *testing.T) {
	old := testkit.Root(t, "root-a", t0, 10*24*time.Hour)
	next := testkit.Root(t, "root-b", t0.Add(time.Hour), 10*24*time.Hour)
	roots := []root.RootRecord{
		{Cert: old.Certificate, AddedAt: t0, ActivateAt: t0},
		{Cert: next.Certificate, AddedAt: t0.Add(time.Hour), ActivateAt: t0.Add(2 * time.Hour)},
	}
	lastUse := map[[32]byte]time.Time{trust.Fingerprint(old.Certificate): t0.Add(5 * time.Hour)}
	for _, tc := range []struct {
		at        time.Time
		old, next root.RootState
	}{
		{t0.Add(90 * time.Minute), root.RootActive, root.RootPrepared},              // new root propagating
		{t0.Add(3 * time.Hour), root.RootRetiring, root.RootActive},                 // switched; old intermediates alive
		{t0.Add(6 * time.Hour), root.RootRetired, root.RootActive},                  // nothing under the old root is valid
		{t0.Add(240*time.Hour + 30*time.Minute), root.RootRetired, root.RootActive}, // old root expired, new one still valid
	} {
		st := root.RootStates(roots, lastUse, tc.at)
		if st[0].State != tc.old || st[1].State != tc.next {
			t.Errorf("at %v: states %s/%s, want %s/%s", tc.at.Sub(t0), st[0].State, st[1].State, tc.old, tc.next)
		}
	}
	if root.RootRetired.InBundle() || !root.RootRetiring.InBundle() || !root.RootPrepared.InBundle() {
		t.Error("InBundle: only retired roots leave the bundle")
	}
}

func TestRootStatesExpiredRootNeverActive(t *testing.T) {
	short := testkit.Root(t, "root-a", t0, time.Hour)
	st := root.RootStates([]root.RootRecord{{Cert: short.Certificate, ActivateAt: t0}}, nil, t0.Add(2*time.Hour))
	if st[0].State != root.RootRetired {
		t.Errorf("expired root is %s, want retired", st[0].State)
	}
}
