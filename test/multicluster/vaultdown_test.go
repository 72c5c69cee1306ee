package multicluster

import (
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/test/vaulttest"
)

// TestVaultOutage seals Vault, then stops it: root operations fail with an
// error naming the cause, the issuer keeps issuing (the workload's
// certificate keeps being renewed), and when Vault is back the root works
// again without a restart.
func TestVaultOutage(t *testing.T) {
	v := vaulttest.StartFile(t)
	root := startRoot(t, vaultRootConfig(t, v))
	east := startIssuer(t, root, "east", "east.example", "")
	w := startWorkload(t, east, root.BundlePath(), "shop", "frontend", 6*time.Second)

	for _, outage := range []struct {
		name, want string
		down, up   func() error
	}{
		{"sealed", "sealed", v.Seal, v.Unseal},
		{"stopped", "unreachable", func() error { v.Stop(); return nil }, func() error {
			if err := v.Restart(); err != nil {
				return err
			}
			return v.Unseal()
		}},
	} {
		if err := outage.down(); err != nil {
			t.Fatalf("%s: %v", outage.name, err)
		}
		// --force: the root of the previous round is still prepared.
		err := root.admin(t, nil, "root", "rotate", "--force")
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), outage.want) {
			t.Fatalf("Vault %s: root rotate gave %v, want an error saying %q", outage.name, err, outage.want)
		}
		// The issuer does not need Vault: two renewals while it is down.
		renewals(t, w, 2, 30*time.Second)
		if err := outage.up(); err != nil {
			t.Fatalf("%s: bring Vault back: %v", outage.name, err)
		}
		waitUntil(t, "root rotate to work again after Vault "+outage.name, 60*time.Second, func() bool {
			return root.admin(t, nil, "root", "rotate", "--propagation-delay", "1h", "--force") == nil
		})
	}
	if n := len(root.roots(t)); n != 3 {
		t.Errorf("%d roots after two successful rotations, want 3", n)
	}
}

// renewals waits until w's certificate has changed n times.
func renewals(t *testing.T, w *workload, n int, timeout time.Duration) {
	t.Helper()
	last := serialOf(t, w)
	for i := 0; i < n; i++ {
		waitUntil(t, "a renewed workload certificate", timeout, func() bool { return serialOf(t, w) != last })
		last = serialOf(t, w)
	}
}

func serialOf(t *testing.T, w *workload) string {
	t.Helper()
	svid, err := w.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[0].SerialNumber.Text(16)
}
