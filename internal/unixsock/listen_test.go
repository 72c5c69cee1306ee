package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	t.Run("creates directory and sets mode", func(t *testing.T) {
		path := filepath.Join(dir, "a", "b", "sds.sock")
		lis, err := Listen(Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket %v mode %v, want a 0600 socket", err, fi.Mode())
		}
		if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
			t.Errorf("directory %v mode %v, want 0700", err, di.Mode().Perm())
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
	t.Run("directory mode and group", func(t *testing.T) {
		old := syscall.Umask(0)
		defer syscall.Umask(old)
		path := filepath.Join(dir, "shared", "spiffe.sock")
		gid := os.Getegid()
		lis, err := Listen(Config{Path: path, Mode: 0o660, DirMode: 0o755, GID: &gid})
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o755 {
			t.Errorf("directory %v mode %v, want 0755", err, di.Mode().Perm())
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || int(st.Gid) != gid {
			t.Errorf("socket mode %v group %d, want 0660 and group %d", fi.Mode().Perm(), st.Gid, gid)
		}
	})
	t.Run("replaces a stale socket", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close() // the file stays, nobody listens: a crashed server's socket
		lis, err := Listen(Config{Path: path, Mode: 0o666})
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
		live, err := Listen(Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		if _, err := Listen(Config{Path: path}); err == nil || !strings.Contains(err.Error(), "another process is serving") {
			t.Errorf("second listener: %v, want a refusal", err)
		}
	})
	t.Run("refuses a regular file", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(Config{Path: path}); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("listen over a file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "x" {
			t.Error("the file was touched")
		}
	})
	t.Run("leaves a replaced socket", func(t *testing.T) {
		path := filepath.Join(dir, "replaced.sock")
		lis, err := Listen(Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := lis.Close(); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != "x" {
			t.Error("Close removed a file that replaced its socket")
		}
	})
	t.Run("bad config", func(t *testing.T) {
		neg := -1
		for _, c := range []struct {
			cfg  Config
			want string
		}{
			{Config{Path: "/" + strings.Repeat("x", 120)}, "limit"},
			{Config{}, "path is required"},
			{Config{Path: filepath.Join(dir, "m.sock"), Mode: os.ModeSetuid | 0o600}, "only permission bits"},
			{Config{Path: filepath.Join(dir, "g.sock"), GID: &neg}, "negative"},
			{Config{Path: filepath.Join(dir, "p.sock"), Peers: PeerPolicy{GIDs: []int{-2}}}, "negative"},
		} {
			if _, err := Listen(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Listen(%+v): %v, want an error with %q", c.cfg, err, c.want)
			}
			if c.cfg.Path != "" {
				if _, err := os.Lstat(c.cfg.Path); !os.IsNotExist(err) {
					t.Errorf("a refused config left %s: %v", c.cfg.Path, err)
				}
			}
		}
	})
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &Config{}, &PeerPolicy{})
}
