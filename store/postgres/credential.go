package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// ClusterCredential returns the credential record of replica of the named
// cluster, or an error wrapping store.ErrNotFound.
func (s *Store) ClusterCredential(ctx context.Context, cluster, replica string) (store.ClusterCredential, error) {
	if s.closed.Load() {
		return store.ClusterCredential{}, fmt.Errorf("postgres: cluster credential: %w", store.ErrClosed)
	}
	c, err := sqlq.ClusterCredential(ctx, on{s.pool}, sqlq.Dollar, cluster, replica)
	if err != nil {
		return store.ClusterCredential{}, fmt.Errorf("postgres: %w", err)
	}
	return c, nil
}

// ClusterCredentials lists the credential records of every replica of the
// named cluster, by replica.
func (s *Store) ClusterCredentials(ctx context.Context, cluster string) ([]store.ClusterCredential, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: cluster credentials: %w", store.ErrClosed)
	}
	out, err := sqlq.ClusterCredentials(ctx, on{s.pool}, sqlq.Dollar, cluster)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return out, nil
}

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
