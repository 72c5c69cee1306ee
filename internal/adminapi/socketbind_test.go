//go:build linux

package adminapi_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/meshca/meshca/internal/adminapi"
)

// TestSocketNeverWiderThanItsMode: the admin socket appears at its path
// only by a rename, already with its mode and owner, even with umask 0
// (a socket bound in place would exist there, mode 0777, until chmodded).
func TestSocketNeverWiderThanItsMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")

	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	lis, err := adminapi.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()

	buf := make([]byte, 64<<10)
	n, err := syscall.Read(fd, buf)
	if err != nil {
		t.Fatalf("read inotify events: %v", err)
	}
	var created, movedIn bool
	for off := 0; off+syscall.SizeofInotifyEvent <= n; {
		var ev syscall.InotifyEvent
		if err := binary.Read(bytes.NewReader(buf[off:off+syscall.SizeofInotifyEvent]), binary.NativeEndian, &ev); err != nil {
			t.Fatal(err)
		}
		name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
		off += syscall.SizeofInotifyEvent + int(ev.Len)
		if name != "admin.sock" {
			continue
		}
		created = created || ev.Mask&syscall.IN_CREATE != 0
		movedIn = movedIn || ev.Mask&syscall.IN_MOVED_TO != 0
	}
	if created || !movedIn {
		t.Fatalf("admin.sock created in place: %v, renamed into place: %v; want only renamed", created, movedIn)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || int(st.Uid) != os.Geteuid() {
		t.Fatalf("admin.sock: %v owned by %d; want a socket, mode 0600, owned by %d", fi.Mode(), st.Uid, os.Geteuid())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d entries beside the socket; the private bind directory was left behind", len(entries)-1)
	}
}
