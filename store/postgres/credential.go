package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshca/meshca/store"
)

// ClusterCredential returns the credential record of the named cluster, or
// an error wrapping store.ErrNotFound.
func (s *Store) ClusterCredential(ctx context.Context, cluster string) (store.ClusterCredential, error) {
	if s.closed.Load() {
		return store.ClusterCredential{}, fmt.Errorf("postgres: cluster credential: %w", store.ErrClosed)
	}
	c := store.ClusterCredential{Cluster: cluster}
	var newest, since, updated int64
	err := s.pool.QueryRow(ctx, `SELECT current_serial, previous_serial, current_used, revoked, newest_not_before,
		lineage_since, updated_at FROM cluster_credentials WHERE cluster = $1`, cluster).
		Scan(&c.Current, &c.Previous, &c.CurrentUsed, &c.Revoked, &newest, &since, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ClusterCredential{}, fmt.Errorf("postgres: cluster credential %s: %w", cluster, store.ErrNotFound)
	}
	if err != nil {
		return store.ClusterCredential{}, fmt.Errorf("postgres: cluster credential %s: %w", cluster, err)
	}
	c.Newest, c.Since, c.UpdatedAt = store.ExpiresFromUnix(newest), store.ExpiresFromUnix(since), fromUnix(updated)
	return c, nil
}

// SwapClusterCredential replaces the record of next.Cluster with next, with
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
	if err := checkText([][2]string{{"cluster", next.Cluster}, {"current serial", next.Current}, {"previous serial", next.Previous},
		{"expected current serial", old.Current}, {"expected previous serial", old.Previous}}); err != nil {
		return err
	}
	now := s.now()
	ev = withTime(ev, now)
	return s.writeTx(ctx, &ev, func(ctx context.Context, tx pgx.Tx) error {
		var tag pgconn.CommandTag
		var err error
		if old.Cluster == "" {
			tag, err = tx.Exec(ctx, `INSERT INTO cluster_credentials
				(cluster, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (cluster) DO NOTHING`,
				next.Cluster, next.Current, next.Previous, next.CurrentUsed, next.Revoked,
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix())
		} else {
			tag, err = tx.Exec(ctx, `UPDATE cluster_credentials
				SET current_serial = $1, previous_serial = $2, current_used = $3, revoked = $4, newest_not_before = $5,
				lineage_since = $6, updated_at = $7
				WHERE cluster = $8 AND current_serial = $9 AND previous_serial = $10 AND current_used = $11 AND revoked = $12
				AND newest_not_before = $13 AND lineage_since = $14`,
				next.Current, next.Previous, next.CurrentUsed, next.Revoked,
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix(),
				old.Cluster, old.Current, old.Previous, old.CurrentUsed, old.Revoked,
				store.ExpiresUnix(old.Newest), store.ExpiresUnix(old.Since))
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("the stored record changed: %w", store.ErrConflict)
		}
		return nil
	})
}
