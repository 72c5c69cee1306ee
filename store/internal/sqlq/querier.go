package sqlq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
)

// Querier is what the shared statements need from a backend's pool,
// connection or transaction; each backend adapts its driver to it. A
// QueryRow that finds no row scans an error matching sql.ErrNoRows, as
// database/sql's and pgx's both do.
type Querier interface {
	// Exec runs query and returns how many rows it affected.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	// QueryRow runs query for at most one row.
	QueryRow(ctx context.Context, query string, args ...any) Scanner
	// Query runs query and calls each for every row in order, stopping at
	// its first error.
	Query(ctx context.Context, query string, args []any, each func(Scanner) error) error
}

// Rows is a result being read: *sql.Rows or pgx.Rows.
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// EachRow calls each for every row of rows in order, stopping at its first
// error, and returns that error or the one that ended rows. The caller
// closes rows.
func EachRow(rows Rows, each func(Scanner) error) error {
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Collect runs query on q and scans every row with scan.
func Collect[T any](ctx context.Context, q Querier, scan func(Scanner) (T, error), query string, args ...any) ([]T, error) {
	var out []T
	err := q.Query(ctx, query, args, func(sc Scanner) error {
		v, err := scan(sc)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// InsertRevocation, within a transaction tx, deletes the lifted entry of
// r's kind and value and inserts r, whose ExpiresAt is stored as expires,
// and returns r with its new ID. An entry of the kind and value in force
// wraps store.ErrAlreadyExists.
func InsertRevocation(ctx context.Context, tx Querier, ph Placeholder, r store.Revocation, expires int64) (store.Revocation, error) {
	if _, err := tx.Exec(ctx, DeleteLiftedSQL(ph), r.Kind, r.Value); err != nil {
		return store.Revocation{}, fmt.Errorf("delete lifted revocation: %w", err)
	}
	err := tx.QueryRow(ctx, InsertRevocationSQL(ph), RevocationArgs(r, expires)...).Scan(&r.ID)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Revocation{}, fmt.Errorf("revocation in force: %w", store.ErrAlreadyExists)
	}
	if err != nil {
		return store.Revocation{}, fmt.Errorf("insert revocation: %w", err)
	}
	return r, nil
}

// Lift, within a transaction tx, marks the entry in force of kind and value
// lifted at now and returns its Cluster, Reason, RevokedBy and RevokedAt.
// None wraps store.ErrNotFound. lifted_at stays non-zero, which is what
// marks the entry lifted, whatever the clock.
func Lift(ctx context.Context, tx Querier, ph Placeholder, kind, value string, now time.Time) (store.Revocation, error) {
	var lifted store.Revocation
	var revokedAt int64
	err := tx.QueryRow(ctx, LiftSQL(ph), max(now.Unix(), 1), kind, value).Scan(&lifted.Cluster, &lifted.Reason, &lifted.RevokedBy, &revokedAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Revocation{}, fmt.Errorf("no revocation in force: %w", store.ErrNotFound)
	case err != nil:
		return store.Revocation{}, fmt.Errorf("lift revocation: %w", err)
	}
	lifted.RevokedAt = FromUnix(revokedAt)
	return lifted, nil
}

// CertificateBySerial reads the certificate of serial from q; none wraps
// store.ErrNotFound.
func CertificateBySerial(ctx context.Context, q Querier, ph Placeholder, serial string) (store.Certificate, error) {
	c, err := ScanCert(q.QueryRow(ctx, `SELECT `+CertColumns+` FROM certificates WHERE serial = `+ph(1), serial))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Certificate{}, fmt.Errorf("certificate %s: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return store.Certificate{}, fmt.Errorf("certificate %s: %w", serial, err)
	}
	return c, nil
}

// PruneOn deletes the certificates expired before expiredBefore from q in
// chunks, as Prune does, and returns how many it deleted.
func PruneOn(ctx context.Context, q Querier, ph Placeholder, expiredBefore time.Time) (int64, error) {
	query := PruneSQL(ph)
	return Prune(ctx, expiredBefore, func(ctx context.Context, cutoff, limit int64) (int64, error) {
		return q.Exec(ctx, query, cutoff, limit)
	})
}

// Certificates reads the certificates matching f from q, as
// CertificatesQuery orders them. A negative f.Limit is an error.
func Certificates(ctx context.Context, q Querier, ph Placeholder, f store.CertificateFilter) ([]store.Certificate, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("negative limit %d", f.Limit)
	}
	text, args := CertificatesQuery(f, ph)
	return Collect(ctx, q, ScanCert, text, args...)
}

// EachEvent calls fn for each event in q with Time >= since (all events for
// a zero since) in sequence order, stopping at fn's first error. Rows are
// streamed, so memory does not grow with the log.
func EachEvent(ctx context.Context, q Querier, ph Placeholder, since time.Time, fn func(store.AuditEvent) error) error {
	text, args := EventsQuery(since, ph)
	return q.Query(ctx, text, args, func(sc Scanner) error {
		ev, err := ScanEvent(sc)
		if err != nil {
			return err
		}
		return fn(ev)
	})
}

// ClusterByName reads the cluster called name from q; none wraps
// store.ErrNotFound.
func ClusterByName(ctx context.Context, q Querier, ph Placeholder, name string) (store.Cluster, error) {
	c, err := ScanCluster(q.QueryRow(ctx, `SELECT `+ClusterColumns+` FROM clusters WHERE name = `+ph(1), name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Cluster{}, fmt.Errorf("cluster %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %s: %w", name, err)
	}
	return c, nil
}

// InsertNew runs an INSERT ... ON CONFLICT DO NOTHING of one row on q and
// turns "no row inserted" into an error wrapping store.ErrAlreadyExists.
func InsertNew(ctx context.Context, q Querier, what, query string, args ...any) error {
	n, err := q.Exec(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("insert %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrAlreadyExists)
	}
	return nil
}
