package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
)

const intermediateColumnList = `serial, cluster, trust_domain, root_fingerprint, not_before, not_after, fingerprint, certificate`

const rootColumnList = `fingerprint, certificate, key_ref, added_at, activate_at`

// Cluster returns the named cluster, or an error wrapping store.ErrNotFound.
func (s *Store) Cluster(ctx context.Context, name string) (store.Cluster, error) {
	if s.closed.Load() {
		return store.Cluster{}, fmt.Errorf("postgres: cluster: %w", store.ErrClosed)
	}
	var c store.Cluster
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT name, trust_domain, created_at FROM clusters WHERE name = $1`, name).
		Scan(&c.Name, &c.TrustDomain, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Cluster{}, fmt.Errorf("postgres: cluster %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Cluster{}, fmt.Errorf("postgres: cluster %s: %w", name, err)
	}
	c.CreatedAt = fromUnix(created)
	return c, nil
}

// Intermediates lists the intermediates matching f by NotBefore ascending,
// then Serial in byte order. No match is an empty result, not an error.
func (s *Store) Intermediates(ctx context.Context, f store.IntermediateFilter) ([]store.Intermediate, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: intermediates: %w", store.ErrClosed)
	}
	q, args := intermediatesQuery(f)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: intermediates: %w", err)
	}
	ins, err := pgx.CollectRows(rows, scanIntermediate)
	if err != nil {
		return nil, fmt.Errorf("postgres: intermediates: %w", err)
	}
	return ins, nil
}

func intermediatesQuery(f store.IntermediateFilter) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Cluster != "" {
		where = append(where, "cluster = "+arg(f.Cluster))
	}
	if f.RootFingerprint != "" {
		where = append(where, "root_fingerprint = "+arg(f.RootFingerprint))
	}
	if !f.ActiveAt.IsZero() {
		// As for certificates: nb <= t iff nb <= floor(t), na >= t iff
		// na >= ceil(t).
		where = append(where, "not_before <= "+arg(f.ActiveAt.Unix()), "not_after >= "+arg(unixCeil(f.ActiveAt)))
	}
	var b strings.Builder
	b.WriteString(`SELECT ` + intermediateColumnList + ` FROM intermediates`)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY not_before ASC, serial ASC")
	return b.String(), args
}

func scanIntermediate(row pgx.CollectableRow) (store.Intermediate, error) {
	var in store.Intermediate
	var nb, na int64
	err := row.Scan(&in.Serial, &in.Cluster, &in.TrustDomain, &in.RootFingerprint, &nb, &na, &in.Fingerprint, &in.DER)
	if err != nil {
		return store.Intermediate{}, err
	}
	in.NotBefore, in.NotAfter = fromUnix(nb), fromUnix(na)
	return in, nil
}

// Roots lists every root recorded, by AddedAt ascending, then Fingerprint
// in byte order.
func (s *Store) Roots(ctx context.Context) ([]store.Root, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: roots: %w", store.ErrClosed)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+rootColumnList+` FROM roots ORDER BY added_at ASC, fingerprint ASC`)
	if err != nil {
		return nil, fmt.Errorf("postgres: roots: %w", err)
	}
	roots, err := pgx.CollectRows(rows, scanRoot)
	if err != nil {
		return nil, fmt.Errorf("postgres: roots: %w", err)
	}
	return roots, nil
}

func scanRoot(row pgx.CollectableRow) (store.Root, error) {
	var r store.Root
	var added, activate int64
	if err := row.Scan(&r.Fingerprint, &r.DER, &r.KeyRef, &added, &activate); err != nil {
		return store.Root{}, err
	}
	r.AddedAt, r.ActivateAt = fromUnix(added), fromUnix(activate)
	return r, nil
}
