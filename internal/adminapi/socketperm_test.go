//go:build linux

package adminapi_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/adminapi"
)

// dialAsEnv, set for a child run of this test binary (started as root),
// makes it dial the admin socket at its value as the user nobody and
// report what happened.
const dialAsEnv = "MESHCA_ADMIN_TEST_DIAL_AS_NOBODY"

// nobody is the uid and gid of the other user.
const nobody = 65534

func TestSocketRefusesOtherUsers(t *testing.T) {
	if path := os.Getenv(dialAsEnv); path != "" {
		// The child: its report is the only thing the parent reads. It
		// stays nobody until it exits, after this test.
		fmt.Println("dial-as-nobody: " + dialAsNobody(path))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: running as a user other than root, so a client cannot switch to another Unix user (uid 65534)")
	}
	// The directories on the way must not be what refuses the other user:
	// only the socket's own mode should.
	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()) && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "admin.sock")
	serve := func(cfg adminapi.UnixConfig) net.Listener {
		t.Helper()
		cfg.Path = path
		lis, err := cfg.Listen()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("served\n"))
				c.Close()
			}
		}()
		return lis
	}

	lis := serve(adminapi.UnixConfig{})
	if got := runDialAsNobody(t, path); got != "refused: permission denied" {
		t.Fatalf("another user dialling the 0600 admin socket: %q, want refused: permission denied", got)
	}
	// With the socket open to all, the listener's user check still refuses
	// the other user: the connection is closed before anything is served.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := runDialAsNobody(t, path); got != "closed" {
		t.Fatalf("another user dialling a 0666 admin socket: %q, want closed by the server", got)
	}
	lis.Close()

	// A user configured as allowed is served.
	lis = serve(adminapi.UnixConfig{Mode: 0o666, AllowUIDs: []uint32{nobody}})
	defer lis.Close()
	if got := runDialAsNobody(t, path); got != "served" {
		t.Fatalf("an allowed user dialling the admin socket: %q, want served", got)
	}
}

// runDialAsNobody runs this test binary again, as root, to dial path as
// the user nobody; it returns the child's report.
func runDialAsNobody(t *testing.T, path string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestSocketRefusesOtherUsers$", "-test.count=1")
	cmd.Env = append(os.Environ(), dialAsEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if report, ok := strings.CutPrefix(strings.TrimSpace(line), "dial-as-nobody: "); ok {
			return report
		}
	}
	t.Fatalf("child reported nothing:\n%s", out)
	return ""
}

// dialAsNobody becomes the user nobody (no supplementary groups) and dials
// the Unix socket at path; it returns what happened.
func dialAsNobody(path string) string {
	if err := syscall.Setgroups(nil); err != nil {
		return "setgroups: " + err.Error()
	}
	if err := syscall.Setgid(nobody); err != nil {
		return "setgid: " + err.Error()
	}
	if err := syscall.Setuid(nobody); err != nil {
		return "setuid: " + err.Error()
	}
	if os.Geteuid() != nobody || os.Getegid() != nobody {
		return fmt.Sprintf("still uid %d gid %d", os.Geteuid(), os.Getegid())
	}
	c, err := net.Dial("unix", path)
	switch {
	case errors.Is(err, syscall.EACCES):
		return "refused: permission denied"
	case err != nil:
		return "error: " + err.Error()
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case err == io.EOF && line == "":
		return "closed"
	case err != nil:
		return "read: " + err.Error()
	}
	return strings.TrimSpace(line)
}
