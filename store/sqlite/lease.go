package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/meshca/meshca/store"
)

// TryLeader takes the leader lease of the database: an exclusive flock(2)
// on the file beside it named Path+"-leader" (created with mode 0600),
// which the kernel drops when the holder closes it or exits. Only
// processes on the host of the database file can hold it, which is where
// SQLite may be used from at all. ok is false when another holder has it.
func (s *Store) TryLeader(ctx context.Context) (_ store.Lease, ok bool, _ error) {
	if s.closed.Load() {
		return nil, false, store.ErrClosed
	}
	f, err := os.OpenFile(s.path+"-leader", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: leader lease: %w", err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, false, nil
	}
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("sqlite: leader lease: %w", err)
	}
	return &fileLease{s: s, f: f}, true, nil
}

// fileLease is a held flock on the lease file.
type fileLease struct {
	s    *Store
	once sync.Once
	f    *os.File
}

// Held fails once the store is closed: the lease is bound to the store.
func (l *fileLease) Held(context.Context) error {
	if l.s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

func (l *fileLease) Release() { l.once.Do(func() { l.f.Close() }) }
