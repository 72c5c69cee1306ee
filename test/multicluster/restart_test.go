package multicluster

import (
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/test/harness"
)

// TestRestarts stops the root while an issuer serves (the issuer keeps
// issuing on its intermediate), brings it back on the same data, then
// restarts the issuer: its one-time join token is spent, so it must renew
// with the credential it stored, and get a fresh intermediate.
func TestRestarts(t *testing.T) {
	root := startRoot(t, "intermediateTTL: 10m\n")
	east := startIssuer(t, root, "east", "east.example", "")
	w := startWorkload(t, east, root.BundlePath(), "shop", "frontend", 6*time.Second)
	firstInter := intermediateOf(t, w)

	root.Stop(t)
	renewals(t, w, 2, 30*time.Second) // the issuer does not need the root to issue
	root.restart(t)

	east.Stop(t)
	east.restart(t)
	east.WaitFor(t, "renewal with the stored credential", harness.StartTimeout, func() bool {
		return strings.Contains(east.Output(), "meshca issuer serving")
	})
	renewals(t, w, 2, 30*time.Second)
	if got := intermediateOf(t, w); got == firstInter {
		t.Error("after the issuer restarted, the workload's certificate is still signed by the old intermediate; the key of which was in the old process only")
	}
	if strings.Contains(east.Output(), "join token rejected") {
		t.Errorf("the restarted issuer tried its spent join token:\n%s", east.Output())
	}
}
