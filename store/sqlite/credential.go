package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// SwapClusterCredential replaces the record of next.Cluster and next.Replica
// with next, with
// ev, in one transaction, if the stored record has old's state (no record
// when old.Cluster is empty); otherwise the error wraps store.ErrConflict
// and nothing is written. Writes are serialized by the writer connection,
// so of two swaps from one state the second finds the first's.
func (s *Store) SwapClusterCredential(ctx context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error {
	if err := s.swapClusterCredential(ctx, old, next, ev); err != nil {
		return fmt.Errorf("sqlite: swap cluster credential %s: %w", next.Cluster, err)
	}
	return nil
}

func (s *Store) swapClusterCredential(ctx context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error {
	if err := store.ValidateSwapClusterCredential(old, next); err != nil {
		return err
	}
	now := s.now()
	ev = sqlq.WithTime(ev, now)
	return s.writeTx(ctx, &ev, func(tx *sql.Tx) error {
		return sqlq.SwapCredential(ctx, on{tx}, sqlq.Question, boolInt, old, next, now)
	})
}

// boolInt is a boolean as SQLite's 0/1 integer columns store it.
func boolInt(b bool) any {
	if b {
		return int64(1)
	}
	return int64(0)
}
