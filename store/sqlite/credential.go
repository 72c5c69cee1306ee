package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

const credentialColumns = `cluster, replica, current_serial, previous_serial, current_used, revoked,
	newest_not_before, lineage_since, updated_at`

func scanCredential(row interface{ Scan(...any) error }) (store.ClusterCredential, error) {
	var c store.ClusterCredential
	var used, revoked, newest, since, updated int64
	if err := row.Scan(&c.Cluster, &c.Replica, &c.Current, &c.Previous, &used, &revoked, &newest, &since, &updated); err != nil {
		return store.ClusterCredential{}, err
	}
	c.CurrentUsed, c.Revoked, c.UpdatedAt = used != 0, revoked != 0, sqlq.FromUnix(updated)
	c.Newest, c.Since = store.ExpiresFromUnix(newest), store.ExpiresFromUnix(since)
	return c, nil
}

// ClusterCredential returns the credential record of replica of the named
// cluster, or an error wrapping store.ErrNotFound.
func (s *Store) ClusterCredential(ctx context.Context, cluster, replica string) (store.ClusterCredential, error) {
	if s.closed.Load() {
		return store.ClusterCredential{}, fmt.Errorf("sqlite: cluster credential: %w", store.ErrClosed)
	}
	c, err := scanCredential(s.r.QueryRowContext(ctx, `SELECT `+credentialColumns+`
		FROM cluster_credentials WHERE cluster = ? AND replica = ?`, cluster, replica))
	if errors.Is(err, sql.ErrNoRows) {
		return store.ClusterCredential{}, fmt.Errorf("sqlite: cluster credential %s %q: %w", cluster, replica, store.ErrNotFound)
	}
	if err != nil {
		return store.ClusterCredential{}, fmt.Errorf("sqlite: cluster credential %s %q: %w", cluster, replica, err)
	}
	return c, nil
}

// ClusterCredentials lists the credential records of every replica of the
// named cluster, by replica.
func (s *Store) ClusterCredentials(ctx context.Context, cluster string) ([]store.ClusterCredential, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: cluster credentials: %w", store.ErrClosed)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+credentialColumns+`
		FROM cluster_credentials WHERE cluster = ? ORDER BY replica`, cluster)
	if err != nil {
		return nil, fmt.Errorf("sqlite: cluster credentials %s: %w", cluster, err)
	}
	defer rows.Close()
	var out []store.ClusterCredential
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: cluster credentials %s: %w", cluster, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: cluster credentials %s: %w", cluster, err)
	}
	return out, nil
}

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
		var res sql.Result
		var err error
		if old.Cluster == "" {
			res, err = tx.ExecContext(ctx, `INSERT INTO cluster_credentials
				(cluster, replica, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (cluster, replica) DO NOTHING`,
				next.Cluster, next.Replica, next.Current, next.Previous, boolInt(next.CurrentUsed), boolInt(next.Revoked),
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix())
		} else {
			res, err = tx.ExecContext(ctx, `UPDATE cluster_credentials
				SET current_serial = ?, previous_serial = ?, current_used = ?, revoked = ?, newest_not_before = ?,
				lineage_since = ?, updated_at = ?
				WHERE cluster = ? AND replica = ? AND current_serial = ? AND previous_serial = ? AND current_used = ? AND revoked = ?
				AND newest_not_before = ? AND lineage_since = ?`,
				next.Current, next.Previous, boolInt(next.CurrentUsed), boolInt(next.Revoked),
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix(),
				old.Cluster, old.Replica, old.Current, old.Previous, boolInt(old.CurrentUsed), boolInt(old.Revoked),
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
