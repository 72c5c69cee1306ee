//go:build !unix

package datadir

import (
	"errors"
	"os"
)

// errUnsupported: without a lock, two processes could share a data dir
// unnoticed, so the servers refuse to start instead.
var errUnsupported = errors.New("locking a data dir is not supported on this platform")

func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

func tryLock(*os.File) (bool, error) { return false, errUnsupported }
