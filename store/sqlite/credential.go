package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/meshca/meshca/store"
)

// ClusterCredential returns the credential record of the named cluster, or
// an error wrapping store.ErrNotFound.
func (s *Store) ClusterCredential(ctx context.Context, cluster string) (store.ClusterCredential, error) {
	if s.closed.Load() {
		return store.ClusterCredential{}, fmt.Errorf("sqlite: cluster credential: %w", store.ErrClosed)
	}
	c := store.ClusterCredential{Cluster: cluster}
	var used, revoked, newest, since, updated int64
	err := s.r.QueryRowContext(ctx, `SELECT current_serial, previous_serial, current_used, revoked, newest_not_before,
		lineage_since, updated_at FROM cluster_credentials WHERE cluster = ?`, cluster).
		Scan(&c.Current, &c.Previous, &used, &revoked, &newest, &since, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ClusterCredential{}, fmt.Errorf("sqlite: cluster credential %s: %w", cluster, store.ErrNotFound)
	}
	if err != nil {
		return store.ClusterCredential{}, fmt.Errorf("sqlite: cluster credential %s: %w", cluster, err)
	}
	c.CurrentUsed, c.Revoked, c.UpdatedAt = used != 0, revoked != 0, fromUnix(updated)
	c.Newest, c.Since = store.ExpiresFromUnix(newest), store.ExpiresFromUnix(since)
	return c, nil
}

// SwapClusterCredential replaces the record of next.Cluster with next, with
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
	ev = withTime(ev, now)
	return s.writeTx(ctx, &ev, func(tx *sql.Tx) error {
		var res sql.Result
		var err error
		if old.Cluster == "" {
			res, err = tx.ExecContext(ctx, `INSERT INTO cluster_credentials
				(cluster, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (cluster) DO NOTHING`,
				next.Cluster, next.Current, next.Previous, boolInt(next.CurrentUsed), boolInt(next.Revoked),
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix())
		} else {
			res, err = tx.ExecContext(ctx, `UPDATE cluster_credentials
				SET current_serial = ?, previous_serial = ?, current_used = ?, revoked = ?, newest_not_before = ?,
				lineage_since = ?, updated_at = ?
				WHERE cluster = ? AND current_serial = ? AND previous_serial = ? AND current_used = ? AND revoked = ?
				AND newest_not_before = ? AND lineage_since = ?`,
				next.Current, next.Previous, boolInt(next.CurrentUsed), boolInt(next.Revoked),
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix(),
				old.Cluster, old.Current, old.Previous, boolInt(old.CurrentUsed), boolInt(old.Revoked),
				store.ExpiresUnix(old.Newest), store.ExpiresUnix(old.Since))
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("the stored record changed: %w", store.ErrConflict)
		}
		return nil
	})
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
