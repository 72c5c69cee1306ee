package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIssuerInitRoot: init-root makes a root whose key is 0600, prints its
// fingerprint, and a second run keeps and shows the same root.
func TestIssuerInitRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "root")
	first, err := runCommand(t, "issuer", "init-root", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, "root-key.pem"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("root-key.pem: %v, %v", info, err)
	}
	if !strings.Contains(first, "sha256 ") || !strings.Contains(first, filepath.Join(dir, "root.pem")) {
		t.Errorf("init-root printed %q", first)
	}
	second, err := runCommand(t, "issuer", "init-root", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if second != first {
		t.Errorf("a second init-root printed %q, want the same root %q", second, first)
	}
	if _, err := runCommand(t, "issuer", "init-root"); err == nil || !strings.Contains(err.Error(), "--dir is required") {
		t.Errorf("init-root without --dir: %v", err)
	}
}
