// Package serverdir opens what a server keeps in its data directory: the
// exclusive lock, the store and the store's audit checkpoints. The root
// and issuer stacks both start this way.
package serverdir

import (
	"context"
	"io"
	"log/slog"

	"github.com/meshca/meshca/internal/datadir"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
)

// Store is a database whose audit chain is checkpointed.
type Store interface {
	store.AuditHeadReader
	io.Closer
}

// Open locks dataDir, opens the store with open and starts the
// checkpoints of its audit chain, named chain, placed by cp in dataDir.
// The lock comes before anything else touches the directory: a second
// server on it would share the keys, the database and the admin socket.
// closeAll stops the checkpoints (after a final one), closes the store and
// releases the lock; on an error, Open has undone what it did.
func Open[S Store](ctx context.Context, dataDir string, open func(context.Context) (S, error), cp checkpoint.DirConfig,
	chain string, log *slog.Logger) (db S, closeAll func(), err error) {
	var zero S
	lock, err := datadir.Acquire(dataDir)
	if err != nil {
		return zero, nil, err
	}
	if db, err = open(ctx); err != nil {
		lock.Release()
		return zero, nil, err
	}
	cp.DataDir = dataDir
	stop, err := checkpoint.Start(db, cp, chain, log)
	if err != nil {
		db.Close()
		lock.Release()
		return zero, nil, err
	}
	return db, func() {
		stop()
		db.Close()
		lock.Release()
	}, nil
}
