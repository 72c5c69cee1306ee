package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/meshca/meshca/store"
)

const clusterColumns = `name, trust_domain, created_at`

const intermediateColumns = `serial, cluster, trust_domain, root_fingerprint, not_before, not_after, fingerprint, certificate`

const rootColumns = `fingerprint, certificate, key_ref, added_at, activate_at`

// Cluster returns the named cluster, or an error wrapping store.ErrNotFound.
func (s *Store) Cluster(ctx context.Context, name string) (store.Cluster, error) {
	if s.closed.Load() {
		return store.Cluster{}, fmt.Errorf("sqlite: cluster: %w", store.ErrClosed)
	}
	c, err := scanCluster(s.r.QueryRowContext(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Cluster{}, fmt.Errorf("sqlite: cluster %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Cluster{}, fmt.Errorf("sqlite: cluster %s: %w", name, err)
	}
	return c, nil
}

func scanCluster(sc scanner) (store.Cluster, error) {
	var c store.Cluster
	var created int64
	if err := sc.Scan(&c.Name, &c.TrustDomain, &created); err != nil {
		return store.Cluster{}, err
	}
	c.CreatedAt = fromUnix(created)
	return c, nil
}

// Intermediates lists the intermediates matching f by NotBefore ascending,
// then Serial. No match is an empty result, not an error.
func (s *Store) Intermediates(ctx context.Context, f store.IntermediateFilter) ([]store.Intermediate, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: intermediates: %w", store.ErrClosed)
	}
	q, args := intermediatesQuery(f)
	ins, err := collect(ctx, s.r, scanIntermediate, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: intermediates: %w", err)
	}
	return ins, nil
}

func intermediatesQuery(f store.IntermediateFilter) (string, []any) {
	var where []string
	var args []any
	if f.Cluster != "" {
		where = append(where, "cluster = ?")
		args = append(args, f.Cluster)
	}
	if f.RootFingerprint != "" {
		where = append(where, "root_fingerprint = ?")
		args = append(args, f.RootFingerprint)
	}
	if !f.ActiveAt.IsZero() {
		// As for certificates: nb <= t iff nb <= floor(t), na >= t iff
		// na >= ceil(t).
		where = append(where, "not_before <= ?", "not_after >= ?")
		args = append(args, f.ActiveAt.Unix(), unixCeil(f.ActiveAt))
	}
	var b strings.Builder
	b.WriteString(`SELECT ` + intermediateColumns + ` FROM intermediates`)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY not_before ASC, serial ASC")
	return b.String(), args
}

func scanIntermediate(sc scanner) (store.Intermediate, error) {
	var in store.Intermediate
	var nb, na int64
	err := sc.Scan(&in.Serial, &in.Cluster, &in.TrustDomain, &in.RootFingerprint, &nb, &na, &in.Fingerprint, &in.DER)
	if err != nil {
		return store.Intermediate{}, err
	}
	in.NotBefore, in.NotAfter = fromUnix(nb), fromUnix(na)
	return in, nil
}

// Roots lists every root recorded, by AddedAt ascending, then Fingerprint.
func (s *Store) Roots(ctx context.Context) ([]store.Root, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: roots: %w", store.ErrClosed)
	}
	roots, err := collect(ctx, s.r, scanRoot,
		`SELECT `+rootColumns+` FROM roots ORDER BY added_at ASC, fingerprint ASC`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: roots: %w", err)
	}
	return roots, nil
}

func scanRoot(sc scanner) (store.Root, error) {
	var r store.Root
	var added, activate int64
	if err := sc.Scan(&r.Fingerprint, &r.DER, &r.KeyRef, &added, &activate); err != nil {
		return store.Root{}, err
	}
	r.AddedAt, r.ActivateAt = fromUnix(added), fromUnix(activate)
	return r, nil
}

// collect runs query on db and scans every row with scan.
func collect[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
