package rootserver

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

// TestWithSQLite runs enrolment, renewal, rotation and a restart against
// the embedded store.
func TestWithSQLite(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "root.db")
	open := func() *sqlite.Store {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	db := open()
	h := newHarness(t, func(c *Config) { c.Store = db; c.Now = clock.Now })
	h.clock = clock
	addr := h.serve()

	token := h.addCluster("east", "east.example")
	iss, err := enroll(t, h.dial(addr, nil), token)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if _, err := enroll(t, h.dial(addr, nil), token); err == nil {
		t.Fatalf("a join token was redeemed twice:\n%s", h.logs.String())
	}
	rootA := h.activeRoot()

	clock.Advance(time.Minute)
	if _, err := h.root.rotate(context.Background(), 0, "admin:test"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(h.cfg.PropagationDelay)
	h.refresh()
	wantStates(t, h, ca.RootRetiring, ca.RootActive)
	rootB := h.activeRoot()
	next, err := renew(t, h.dial(addr, iss.tlsCert()), iss, true)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if !signedBy(next.inter, rootB, clock.Now()) || !signedBy(next.cred, rootB, clock.Now()) {
		t.Fatal("renewal after activation is not under the new root")
	}
	ins, err := db.Intermediates(context.Background(), store.IntermediateFilter{RootFingerprint: fingerprintHex(rootA)})
	if err != nil || len(ins) != 1 || ins[0].Serial != ca.SerialHex(iss.inter.SerialNumber) {
		t.Fatalf("intermediates under the old root: %v, %+v", err, ins)
	}

	// A restart on a reopened database keeps the roots and their states.
	before, _ := h.root.Current()
	clock.Advance(time.Second)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	h.cfg.Store = open()
	h.root = h.start()
	wantStates(t, h, ca.RootRetiring, ca.RootActive)
	after, _ := h.root.Current()
	if !after.Equal(before) || after.Sequence <= before.Sequence {
		t.Fatalf("bundle across a restart: equal %v, sequence %d -> %d", after.Equal(before), before.Sequence, after.Sequence)
	}
	// The old root retires once the first intermediate has expired.
	clock.Advance(iss.inter.NotAfter.Sub(clock.Now()) + time.Second)
	h.refresh()
	wantStates(t, h, ca.RootRetired, ca.RootActive)
}
