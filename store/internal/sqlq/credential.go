package sqlq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
)

// CredentialColumns is the column list ScanCredential reads.
const CredentialColumns = `cluster, replica, current_serial, previous_serial, current_used, revoked,
	newest_not_before, lineage_since, updated_at`

// ScanCredential reads a row of CredentialColumns. The two flags scan into
// bools from PostgreSQL's boolean and SQLite's 0/1 integer columns alike.
func ScanCredential(sc Scanner) (store.ClusterCredential, error) {
	var c store.ClusterCredential
	var newest, since, updated int64
	if err := sc.Scan(&c.Cluster, &c.Replica, &c.Current, &c.Previous, &c.CurrentUsed, &c.Revoked,
		&newest, &since, &updated); err != nil {
		return store.ClusterCredential{}, err
	}
	c.Newest, c.Since, c.UpdatedAt = store.ExpiresFromUnix(newest), store.ExpiresFromUnix(since), FromUnix(updated)
	return c, nil
}

// ClusterCredential reads the credential record of replica of cluster from
// q; none wraps store.ErrNotFound.
func ClusterCredential(ctx context.Context, q Querier, ph Placeholder, cluster, replica string) (store.ClusterCredential, error) {
	c, err := ScanCredential(q.QueryRow(ctx, `SELECT `+CredentialColumns+`
		FROM cluster_credentials WHERE cluster = `+ph(1)+` AND replica = `+ph(2), cluster, replica))
	if errors.Is(err, sql.ErrNoRows) {
		return store.ClusterCredential{}, fmt.Errorf("cluster credential %s %q: %w", cluster, replica, store.ErrNotFound)
	}
	if err != nil {
		return store.ClusterCredential{}, fmt.Errorf("cluster credential %s %q: %w", cluster, replica, err)
	}
	return c, nil
}

// ClusterCredentials reads the credential records of every replica of
// cluster from q, by replica.
func ClusterCredentials(ctx context.Context, q Querier, ph Placeholder, cluster string) ([]store.ClusterCredential, error) {
	out, err := Collect(ctx, q, ScanCredential, `SELECT `+CredentialColumns+`
		FROM cluster_credentials WHERE cluster = `+ph(1)+` ORDER BY replica`, cluster)
	if err != nil {
		return nil, fmt.Errorf("cluster credentials %s: %w", cluster, err)
	}
	return out, nil
}

// SwapCredential, within a transaction tx, inserts next when old.Cluster is
// empty, and otherwise replaces the record in old's state with next, at
// now. A record not in old's state (or one present for an insert) wraps
// store.ErrConflict. flag is how the backend stores a boolean column.
func SwapCredential(ctx context.Context, tx Querier, ph Placeholder, flag func(bool) any, old, next store.ClusterCredential, now time.Time) error {
	var n int64
	var err error
	if old.Cluster == "" {
		n, err = tx.Exec(ctx, `INSERT INTO cluster_credentials
			(cluster, replica, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at)
			VALUES (`+list(ph, 9)+`)
			ON CONFLICT (cluster, replica) DO NOTHING`,
			next.Cluster, next.Replica, next.Current, next.Previous, flag(next.CurrentUsed), flag(next.Revoked),
			store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix())
	} else {
		n, err = tx.Exec(ctx, `UPDATE cluster_credentials
			SET current_serial = `+ph(1)+`, previous_serial = `+ph(2)+`, current_used = `+ph(3)+`, revoked = `+ph(4)+`,
			newest_not_before = `+ph(5)+`, lineage_since = `+ph(6)+`, updated_at = `+ph(7)+`
			WHERE cluster = `+ph(8)+` AND replica = `+ph(9)+` AND current_serial = `+ph(10)+` AND previous_serial = `+ph(11)+`
			AND current_used = `+ph(12)+` AND revoked = `+ph(13)+` AND newest_not_before = `+ph(14)+` AND lineage_since = `+ph(15),
			next.Current, next.Previous, flag(next.CurrentUsed), flag(next.Revoked),
			store.ExpiresUnix(next.Newest), store.ExpiresUnix(next.Since), now.Unix(),
			old.Cluster, old.Replica, old.Current, old.Previous, flag(old.CurrentUsed), flag(old.Revoked),
			store.ExpiresUnix(old.Newest), store.ExpiresUnix(old.Since))
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("the stored record changed: %w", store.ErrConflict)
	}
	return nil
}
