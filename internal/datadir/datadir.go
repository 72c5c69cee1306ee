// Package datadir guards a server's data directory against a second
// process: `meshca dev`, `meshca issuer serve` and `meshca root serve` each
// hold an exclusive lock on DATA_DIR/lock for as long as they run, so that
// two of them never share keys, a database, checkpoints or the admin socket.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lockFile is the name of the lock file inside a data directory. It is left
// in place on exit: removing it would let a process that opened the old
// file and one that created a new one both believe they hold the lock.
const lockFile = "lock"

// errInUse is returned (wrapped) by Acquire while another process holds the
// data directory.
var errInUse = errors.New("in use by another meshca process")

// Lock is an exclusive hold on a data directory.
type Lock struct {
	f *os.File
}

// Acquire creates dir (mode 0700) when missing and takes an exclusive lock
// on dir/lock (mode 0600), without waiting. The lock lasts until Release or
// the end of the process: the kernel drops it when the process dies,
// however it dies, so it never goes stale. While another process holds it,
// the error wraps ErrInUse and names dir and, when known, that process's
// pid. The caller must keep the Lock reachable (defer Release) for as long
// as it uses dir.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := openLockFile(path)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	if !held {
		f.Close()
		return nil, inUse(dir, path)
	}
	// Record who holds it, for the message a second process prints.
	if err := writePID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock. The lock file stays.
func (l *Lock) Release() error {
	return l.f.Close()
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// inUse builds the error for a data dir another process holds, naming its
// pid when the lock file says it.
func inUse(dir, path string) error {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	holder := "pid unknown"
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			holder = "pid " + strconv.Itoa(pid)
		}
	}
	return fmt.Errorf("data dir %s is %w (%s); stop it, or give this process its own data dir", dir, errInUse, holder)
}
