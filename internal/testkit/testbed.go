package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestbedDir is where the test bed (`make testbed-*`) caches the real
// components the tests run: $XDG_CACHE_HOME/meshca-testbed, else
// ~/.cache/meshca-testbed.
func TestbedDir() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "meshca-testbed")
}

// TestbedBin returns the binary named by $env, else the one at rel below
// TestbedDir. When it is missing it skips the test, or fails it under
// CI=true, where `make test` must have built it; what names the binary and
// target the make target that builds it alone, in that message.
func TestbedBin(tb testing.TB, env, rel, what, target string) string {
	tb.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		bin = filepath.Join(TestbedDir(), rel)
	}
	if st, err := os.Stat(bin); err == nil && !st.IsDir() {
		return bin
	}
	msg := fmt.Sprintf("%s not found (%s=%q): `make test` or `make %s` builds it", what, env, bin, target)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}
