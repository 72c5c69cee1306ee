package ca_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
	"go.step.sm/crypto/keyutil"
)

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "key.pem")
	k1, err := ca.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !contains(data, "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("key file is not PKCS#8 PEM:\n%s", data)
	}
	k2, err := ca.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !keyutil.Equal(k1.Public(), k2.Public()) {
		t.Error("reloading the key file produced a different key")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.LoadKeyFile(path); err == nil {
		t.Error("a world-readable key file was accepted")
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.LoadKeyFile(path); err == nil {
		t.Error("a corrupt key file was accepted")
	}
}

func TestFileRootSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	r1, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir, Now: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !r1.Certificate.Equal(r2.Certificate) {
		t.Error("restart on the same directory produced a different root")
	}
	if _, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir, Now: t0.Add(ca.DefaultRootTTL + time.Hour)}); !errors.Is(err, ca.ErrCAExpired) {
		t.Errorf("expired root: err = %v, want ErrCAExpired", err)
	}
}

func TestFileRootRefusesMismatchedKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir, Now: t0}); err != nil {
		t.Fatal(err)
	}
	other := testkit.New(t, testkit.Options{Now: t0})
	if err := os.WriteFile(filepath.Join(dir, ca.RootCertFile), trust.EncodeCertificates(other.Intermediate.Certificate), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir, Now: t0}); err == nil {
		t.Error("a root certificate that does not match the key was accepted")
	}
	if err := os.Remove(filepath.Join(dir, ca.RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir, Now: t0}); err == nil {
		t.Error("a root certificate without its key was accepted")
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

// TestLoadFileRootCreatesNothing: loading from a directory without a root
// refuses and leaves it empty; loading from a read-only directory holding a
// root (a mounted Secret) works and writes nothing.
func TestLoadFileRootCreatesNothing(t *testing.T) {
	empty := t.TempDir()
	if _, err := ca.LoadFileRoot(ca.FileRootConfig{Dir: empty, Now: t0}); !errors.Is(err, ca.ErrNoFileRoot) {
		t.Fatalf("LoadFileRoot(empty dir) = %v, want ErrNoFileRoot", err)
	}
	if entries, err := os.ReadDir(empty); err != nil || len(entries) != 0 {
		t.Fatalf("empty dir after LoadFileRoot: %v, %v; want nothing created", entries, err)
	}

	dir := t.TempDir()
	want, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	before, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, load := range map[string]func(ca.FileRootConfig) (*ca.Authority, error){
		"LoadFileRoot": ca.LoadFileRoot, "LoadOrCreateFileRoot": ca.LoadOrCreateFileRoot,
	} {
		got, err := load(ca.FileRootConfig{Dir: dir, Now: t0.Add(time.Hour)})
		if err != nil {
			t.Fatalf("%s(read-only dir): %v", name, err)
		}
		if !got.Certificate.Equal(want.Certificate) {
			t.Fatalf("%s(read-only dir) loaded another root", name)
		}
	}
	after, err := os.ReadDir(dir)
	if err != nil || len(after) != len(before) {
		t.Fatalf("read-only dir had %d entries, now %d (%v)", len(before), len(after), err)
	}
}
