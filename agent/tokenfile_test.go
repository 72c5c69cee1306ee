package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshca/meshca/agent/sdstest"
	"github.com/meshca/meshca/internal/testkit"
)

// TestAgentSetTokenFile: a token file that cannot be read is refused and
// changes nothing; a readable one is used by every later renewal, so the
// old file may go.
func TestAgentSetTokenFile(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now().Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, true)
	oldToken := dummyToken(t)
	ra := startAgent(t, fi.addr, fi.bundleFile, oldToken, 2*time.Second)
	def := subscribe(t, envoy(t, ra.cfg.SDSSocket, "node"), ResourceDefault)
	first := next(t, def).Chain[0]

	empty := filepath.Join(t.TempDir(), "empty")
	writeTestFile(t, empty, "")
	for _, bad := range []string{filepath.Join(t.TempDir(), "missing"), empty} {
		if err := ra.SetTokenFile(bad); err == nil {
			t.Errorf("SetTokenFile(%s) = nil, want an error", bad)
		}
	}
	if err := ra.SetTokenFile(dummyToken(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(oldToken); err != nil {
		t.Fatal(err)
	}
	// Two renewals after the removal: the first might have read the old
	// file just before it went.
	seen := first
	for range 2 {
		seen = nextUntil(t, def, "a renewal with the new token file", func(u *sdstest.Update) bool { return !u.Chain[0].Equal(seen) }).Chain[0]
	}
	if err := ra.ready(); err != nil {
		t.Errorf("not ready: %v", err)
	}
}
