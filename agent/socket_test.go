package agent

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	t.Run("creates directory and sets mode", func(t *testing.T) {
		path := filepath.Join(dir, "a", "b", "sds.sock")
		lis, err := listenUnix(path, 0o600, -1)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket %v mode %v, want a 0600 socket", err, fi.Mode())
		}
		if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
			t.Errorf("directory holds %d entries, want only the socket (no temporary left)", len(entries))
		}
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conn.Close()
		if err := lis.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("socket still there after Close: %v", err)
		}
	})
	t.Run("replaces a stale socket", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close() // the file stays, nobody listens: a crashed agent's socket
		lis, err := listenUnix(path, 0o666, -1)
		if err != nil {
			t.Fatalf("stale socket not replaced: %v", err)
		}
		defer lis.Close()
		if fi, _ := os.Lstat(path); fi.Mode().Perm() != 0o666 {
			t.Errorf("mode %v, want 0666", fi.Mode().Perm())
		}
	})
	t.Run("refuses a live socket", func(t *testing.T) {
		path := filepath.Join(dir, "live.sock")
		live, err := listenUnix(path, 0o600, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		if _, err := listenUnix(path, 0o600, -1); err == nil || !strings.Contains(err.Error(), "another process is serving") {
			t.Errorf("second listener: %v, want a refusal", err)
		}
	})
	t.Run("refuses a regular file", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := listenUnix(path, 0o600, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("listen over a file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "x" {
			t.Error("the file was touched")
		}
	})
	t.Run("path too long", func(t *testing.T) {
		if _, err := listenUnix("/"+strings.Repeat("x", 120), 0o600, -1); err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("long path: %v", err)
		}
	})
}
