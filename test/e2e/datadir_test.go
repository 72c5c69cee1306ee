package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// TestSecondServerOnADataDirIsRefused starts meshca dev, then tries every
// server command on its data dir: each must exit non-zero at once, naming
// the dir and the pid that holds it, without touching the dir, so the first
// keeps serving its admin socket.
func TestSecondServerOnADataDirIsRefused(t *testing.T) {
	srv := startDev(t, devOptions{})
	socket := filepath.Join(srv.DataDir, "admin.sock")
	mustSucceed(t, "admin call before", runMeshca(t, srv.Dir, "admin", "--socket", socket, "certs", "list"))
	before := dirEntries(t, srv.DataDir)
	pid := "pid " + strconv.Itoa(srv.cmd.Process.Pid)

	issuerCfg := filepath.Join(t.TempDir(), "issuer.yaml")
	writeFile(t, issuerCfg, "dataDir: "+srv.DataDir+"\nlisten: "+testkit.FreeAddr(t)+
		"\ncluster: dev\nclusters:\n  - name: dev\n    attestor: dev\n")
	rootCfg := filepath.Join(t.TempDir(), "root.yaml")
	writeFile(t, rootCfg, "dataDir: "+srv.DataDir+"\nlisten: "+testkit.FreeAddr(t)+
		"\nhosts: [\"meshca-root.internal\"]\nkey:\n  kind: file\n")
	seconds := []struct {
		name string
		args []string
	}{
		{"meshca dev", []string{"dev", "--listen", testkit.FreeAddr(t)}},
		{"meshca issuer serve", []string{"issuer", "serve", "--config", issuerCfg}},
		{"meshca root serve", []string{"root", "serve", "--config", rootCfg}},
	}
	for _, second := range seconds {
		t.Run(second.name, func(t *testing.T) {
			r := runWithin(t, configExitTimeout, srv.Dir, meshcaBin, second.args...)
			if r.code == 0 {
				t.Fatalf("a second server on %s started and exited 0: %s", srv.DataDir, r)
			}
			if !strings.Contains(r.stderr, "is in use by another meshca process ("+pid+")") ||
				!containsPath(r.stderr, srv.DataDir) {
				t.Errorf("refusal does not say that %s is in use by %s: %s", srv.DataDir, pid, r)
			}
		})
	}

	if after := dirEntries(t, srv.DataDir); !slices.Equal(after, before) {
		t.Errorf("the refused servers changed the data dir: before %q, after %q", before, after)
	}
	mustSucceed(t, "admin call after the refused servers", runMeshca(t, srv.Dir, "admin", "--socket", socket, "certs", "list"))
}

// TestDataDirLockDiesWithItsProcess kills meshca dev with SIGKILL: nothing
// it left behind (lock file, admin socket) keeps the next one from
// starting on the same data dir.
func TestDataDirLockDiesWithItsProcess(t *testing.T) {
	opts := devOptions{Dir: t.TempDir()}
	first := startDev(t, opts)
	first.kill()
	if err := os.Remove(first.BundlePath()); err != nil {
		t.Fatal(err)
	}
	second := startDev(t, opts)
	mustSucceed(t, "admin call after the restart", runMeshca(t, second.Dir, "admin", "--socket",
		filepath.Join(second.DataDir, "admin.sock"), "certs", "list"))
	second.Stop(t, syscall.SIGTERM)
}

// dirEntries lists the names in dir, sorted.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// containsPath reports whether s names path, as given or with symlinks
// resolved (a process reports the directory it was given relative to its
// own working directory).
func containsPath(s, path string) bool {
	if strings.Contains(s, path) {
		return true
	}
	resolved, err := filepath.EvalSymlinks(path)
	return err == nil && strings.Contains(s, resolved)
}
