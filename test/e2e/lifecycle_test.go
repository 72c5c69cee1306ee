package e2e

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRestartKeepsRoot stops meshca dev and starts it again on the same data
// dir and address: the root, and so every certificate issued before, stays
// trusted.
func TestRestartKeepsRoot(t *testing.T) {
	requireOpenSSL(t)
	work := t.TempDir()
	opts := devOptions{Dir: work, DataDir: filepath.Join(work, "data")}
	first := startDev(t, opts)
	opts.Addr = first.Addr

	for _, f := range []string{"root-key.pem", "dev-token-key.pem"} {
		if fi, err := os.Stat(filepath.Join(first.DataDir, f)); err != nil {
			t.Fatal(err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, fi.Mode().Perm())
		}
	}
	_, tokenFile := mintToken(t, work, "token", "--data-dir", opts.DataDir)
	before := filepath.Join(work, "before")
	mustSucceed(t, "cert fetch before restart", fetchCert(t, first, tokenFile, before))
	bundleBefore := readFile(t, first.BundlePath())
	savedBundle := filepath.Join(work, "bundle-before.pem")
	if err := os.WriteFile(savedBundle, bundleBefore, 0o644); err != nil {
		t.Fatal(err)
	}

	first.Stop(t, syscall.SIGTERM)
	// Remove the old bundle.pem so that readiness waits for the one the
	// restarted process writes, and the comparison below compares the two
	// runs rather than reading the first run's file again.
	if err := os.Remove(first.BundlePath()); err != nil {
		t.Fatal(err)
	}
	second := startDev(t, opts)

	if bundleAfter := readFile(t, second.BundlePath()); !bytes.Equal(bundleAfter, bundleBefore) {
		t.Errorf("bundle.pem changed across the restart:\nbefore:\n%s\nafter:\n%s", bundleBefore, bundleAfter)
	}
	cert := filepath.Join(before, "cert.pem")
	if out := openssl(t, "verify", "-CAfile", second.BundlePath(), "-untrusted", cert, cert); out != cert+": OK\n" {
		t.Errorf("certificate from before the restart: openssl verify printed %q, want %q", out, cert+": OK\n")
	}

	// The dev token key survives too: the token minted before the restart
	// still works, and the new certificate chains to the old bundle.
	after := filepath.Join(work, "after")
	if r := fetchCert(t, second, tokenFile, after); r.code != 0 {
		t.Fatalf("cert fetch after restart with the token minted before: %s\n%s", r, second.Output())
	}
	cert = filepath.Join(after, "cert.pem")
	if out := openssl(t, "verify", "-CAfile", savedBundle, "-untrusted", cert, cert); out != cert+": OK\n" {
		t.Errorf("certificate from after the restart against the old bundle: openssl verify printed %q", out)
	}
}

// TestShutdownSignals checks that meshca dev exits 0 on Ctrl-C and on
// SIGTERM, and stops listening.
func TestShutdownSignals(t *testing.T) {
	tests := []struct {
		name string
		sig  os.Signal
	}{
		{"SIGINT", os.Interrupt},
		{"SIGTERM", syscall.SIGTERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startDev(t, devOptions{})
			// Serve one request first, so shutdown happens with a store
			// and a connection that have been used.
			_, tokenFile := mintToken(t, srv.Dir, "token")
			if r := fetchCert(t, srv, tokenFile, filepath.Join(srv.Dir, "certs")); r.code != 0 {
				t.Fatalf("cert fetch: %s\n%s", r, srv.Output())
			}

			srv.Stop(t, tt.sig)

			if c, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after meshca dev exited", srv.Addr)
			}
		})
	}
}
