package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// maxSocketPath is the longest Unix socket path every platform accepts
// (sun_path is 104 bytes on the BSDs, 108 on Linux, with a NUL).
const maxSocketPath = 103

// listenUnix listens on a Unix socket at path with file mode perm and
// group gid (-1: the process's). It
// creates the socket's directory (0755) when missing. A socket file that
// nobody serves (left by a crash) is replaced; a socket another process
// serves, or a file that is not a socket, is an error.
//
// The socket is bound inside a private (0700) temporary directory next to
// path, given its mode, then renamed into place, so it is never reachable
// with a looser mode or another group than asked. Closing the listener
// removes path.
func listenUnix(path string, perm os.FileMode, gid int) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes long; the limit is %d", path, len(path), maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := checkStaleSocket(path); err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp(dir, ".s")
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	lis.SetUnlinkOnClose(false)
	if gid >= 0 {
		if err := os.Lchown(tmp, -1, gid); err != nil {
			lis.Close()
			return nil, fmt.Errorf("socket %s: group: %w", path, err)
		}
	}
	if err := os.Chmod(tmp, perm); err != nil {
		lis.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		lis.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &unixListener{Listener: lis, path: path, file: fi}, nil
}

// checkStaleSocket returns nil when path does not exist or is a socket
// nobody listens on.
func checkStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("socket %s: %w", path, err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("socket %s: a file that is not a socket is in the way", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("socket %s: another process is serving it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is stale: %w", path, err)
	}
	return nil
}

// unixListener removes its socket file when closed, unless the file was
// replaced by someone else meanwhile.
type unixListener struct {
	net.Listener
	path string
	file os.FileInfo
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		if fi, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(fi, l.file) {
			if rmErr := os.Remove(l.path); rmErr != nil && err == nil {
				err = fmt.Errorf("remove socket %s: %w", l.path, rmErr)
			}
		}
	})
	return err
}
