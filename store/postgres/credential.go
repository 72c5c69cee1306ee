package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// SwapClusterCredential replaces the record of next.Cluster and next.Replica
// with next, with
// ev, in one transaction, if the stored record has old's state (no record
// when old.Cluster is empty); otherwise the error wraps store.ErrConflict
// and nothing is written. Of two concurrent swaps from one state, from any
// number of processes, the second waits for the first's row lock, then
// re-checks its condition against the committed row and matches nothing.
func (s *Store) SwapClusterCredential(ctx context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error {
	if err := s.swapClusterCredential(ctx, old, next, ev); err != nil {
		return fmt.Errorf("postgres: swap cluster credential %s: %w", next.Cluster, err)
	}
	return nil
}

func (s *Store) swapClusterCredential(ctx context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error {
	if err := store.ValidateSwapClusterCredential(old, next); err != nil {
		return err
	}
	if err := checkText([][2]string{{"cluster", next.Cluster}, {"replica", next.Replica}, {"current serial", next.Current}, {"previous serial", next.Previous},
		{"expected current serial", old.Current}, {"expected previous serial", old.Previous}}); err != nil {
		return err
	}
	now := s.now()
	ev = sqlq.WithTime(ev, now)
	return s.writeTx(ctx, &ev, func(ctx context.Context, tx pgx.Tx) error {
		return sqlq.SwapCredential(ctx, on{tx}, sqlq.Dollar, func(b bool) any { return b }, old, next, now)
	})
}
