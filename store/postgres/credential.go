package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

const credentialColumns = `cluster, replica, current_serial, previous_serial, current_used, revoked,
	newest_not_before, lineage_since, updated_at`

func scanCredential(row pgx.Row) (store.ClusterCredential, error) {
	var c store.ClusterCredential
	var newest, since, updated int64
	if err := row.Scan(&c.Cluster, &c.Replica, &c.Current, &c.Previous, &c.CurrentUsed, &c.Revoked,
		&newest, &since, &updated); err != nil {
		return store.ClusterCredential{}, err
	}
	c.Newest, c.Since, c.UpdatedAt = store.ExpiresFromUnix(newest), store.ExpiresFromUnix(since), sqlq.FromUnix(updated)
	return c, nil
}

// ClusterCredential returns the credential record of replica of the named
// cluster, or an error wrapping store.ErrNotFound.
func (s *Store) ClusterCredential(ctx context.Context, cluster, replica string) (store.ClusterCredential, error) {
	if s.closed.Load() {
		return store.ClusterCredential{}, fmt.Errorf("postgres: cluster credential: %w", store.ErrClosed)
	}
	c, err := scanCredential(s.pool.QueryRow(ctx, `SELECT `+credentialColumns+`
		FROM cluster_credentials WHERE cluster = $1 AND replica = $2`, cluster, replica))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ClusterCredential{}, fmt.Errorf("postgres: cluster credential %s %q: %w", cluster, replica, store.ErrNotFound)
	}
	if err != nil {
		return store.ClusterCredential{}, fmt.Errorf("postgres: cluster credential %s %q: %w", cluster, replica, err)
	}
	return c, nil
}

// ClusterCredentials lists the credential records of every replica of the
// named cluster, by replica.
func (s *Store) ClusterCredentials(ctx context.Context, cluster string) ([]store.ClusterCredential, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: cluster credentials: %w", store.ErrClosed)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+credentialColumns+`
		FROM cluster_credentials WHERE cluster = $1 ORDER BY replica`, cluster)
	if err != nil {
		return nil, fmt.Errorf("postgres: cluster credentials %s: %w", cluster, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.ClusterCredential, error) { return scanCredential(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: cluster credentials %s: %w", cluster, err)
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
		var tag pgconn.CommandTag
		var err error
		if old.Cluster == "" {
			tag, err = tx.Exec(ctx, `INSERT INTO cluster_credentials
				(cluster, replica, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
				ON CONFLICT (cluster, replica) DO NOTHING`,
				next.Cluster, next.Replica, next.Current, next.Previous, next.CurrentUsed, next.Revoked,
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix())
		} else {
			tag, err = tx.Exec(ctx, `UPDATE cluster_credentials
				SET current_serial = $1, previous_serial = $2, current_used = $3, revoked = $4, newest_not_before = $5,
				lineage_since = $6, updated_at = $7
				WHERE cluster = $8 AND replica = $9 AND current_serial = $10 AND previous_serial = $11 AND current_used = $12
				AND revoked = $13 AND newest_not_before = $14 AND lineage_since = $15`,
				next.Current, next.Previous, next.CurrentUsed, next.Revoked,
				store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix(),
				old.Cluster, old.Replica, old.Current, old.Previous, old.CurrentUsed, old.Revoked,
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
