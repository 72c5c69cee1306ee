package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
)

// leaderLockID is the key of the leader lease's advisory lock: the bytes
// "meshcald". Advisory locks are per database, so this is one lease per
// store.
const leaderLockID int64 = 0x6d65736863616c64

// TryLeader takes the leader lease of the database: a session-level
// advisory lock (pg_try_advisory_lock) on a connection of its own, taken
// out of the pool. The lock lasts as long as that connection: when the
// holder exits or its connection breaks, PostgreSQL releases it and
// another process can take it. ok is false when another session holds it.
func (s *Store) TryLeader(ctx context.Context) (_ store.Lease, ok bool, _ error) {
	if s.closed.Load() {
		return nil, false, store.ErrClosed
	}
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("postgres: leader lease: %w", err)
	}
	if err := pc.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLockID).Scan(&ok); err != nil {
		pc.Release()
		return nil, false, fmt.Errorf("postgres: leader lease: %w", err)
	}
	if !ok {
		pc.Release()
		return nil, false, nil
	}
	// Out of the pool: the pool must neither hand the session to others
	// nor close it while the lease is held.
	return &advisoryLease{conn: pc.Hijack()}, true, nil
}

// advisoryLease is a held advisory lock and its connection.
type advisoryLease struct {
	mu   sync.Mutex
	conn *pgx.Conn // nil once released
}

// leaseCheckTimeout bounds Held's round trip: a connection that does not
// answer within it counts as lost.
const leaseCheckTimeout = 5 * time.Second

// Held pings the lock's connection: while the session lives, no other
// session can hold the lock.
func (l *advisoryLease) Held(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return fmt.Errorf("postgres: leader lease released")
	}
	ctx, cancel := context.WithTimeout(ctx, leaseCheckTimeout)
	defer cancel()
	if err := l.conn.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: leader lease: %w", err)
	}
	return nil
}

// Release unlocks the lock, so that another session can take it at once,
// and closes its connection (which would release it too, but only once the
// server has seen the session end).
func (l *advisoryLease) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseCheckTimeout)
	defer cancel()
	_, _ = l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, leaderLockID)
	_ = l.conn.Close(ctx)
	l.conn = nil
}
