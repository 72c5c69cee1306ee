package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
)

const certColumnList = `serial, spiffe_id, cluster, not_before, not_after, fingerprint, pod_uid`

const eventColumnList = `seq, time, actor, action, cluster, spiffe_id, serial, detail, prev_hash, hash`

// Certificate returns the certificate with the given serial, or an error
// wrapping store.ErrNotFound.
func (s *Store) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	if s.closed.Load() {
		return store.Certificate{}, fmt.Errorf("postgres: certificate: %w", store.ErrClosed)
	}
	row := s.pool.QueryRow(ctx, `SELECT `+certColumnList+` FROM certificates WHERE serial = $1`, serial)
	c, err := scanCert(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Certificate{}, fmt.Errorf("postgres: certificate %s: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return store.Certificate{}, fmt.Errorf("postgres: certificate %s: %w", serial, err)
	}
	return c, nil
}

// Certificates lists the certificates matching f, newest first (NotBefore
// descending, then Serial ascending in byte order). No match is an empty
// result, not an error.
func (s *Store) Certificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: certificates: %w", store.ErrClosed)
	}
	if f.Limit < 0 {
		return nil, fmt.Errorf("postgres: certificates: negative limit %d", f.Limit)
	}
	q, args := certificatesQuery(f)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: certificates: %w", err)
	}
	certs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Certificate, error) { return scanCert(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: certificates: %w", err)
	}
	return certs, nil
}

func certificatesQuery(f store.CertificateFilter) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.SPIFFEID != "" {
		where = append(where, "spiffe_id = "+arg(f.SPIFFEID))
	}
	if f.Cluster != "" {
		where = append(where, "cluster = "+arg(f.Cluster))
	}
	if !f.ActiveAt.IsZero() {
		// Whole stored seconds against a possibly fractional instant:
		// nb <= t iff nb <= floor(t), na >= t iff na >= ceil(t).
		where = append(where, "not_before <= "+arg(f.ActiveAt.Unix()), "not_after >= "+arg(unixCeil(f.ActiveAt)))
	}
	var b strings.Builder
	b.WriteString(`SELECT ` + certColumnList + ` FROM certificates`)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY not_before DESC, serial ASC")
	if f.Limit > 0 {
		b.WriteString(" LIMIT " + arg(f.Limit))
	}
	return b.String(), args
}

func scanCert(row pgx.Row) (store.Certificate, error) {
	var c store.Certificate
	var nb, na int64
	if err := row.Scan(&c.Serial, &c.SPIFFEID, &c.Cluster, &nb, &na, &c.Fingerprint, &c.PodUID); err != nil {
		return store.Certificate{}, err
	}
	c.NotBefore, c.NotAfter = fromUnix(nb), fromUnix(na)
	return c, nil
}

func scanEvent(row pgx.Row) (store.AuditEvent, error) {
	var ev store.AuditEvent
	var t int64
	err := row.Scan(&ev.Seq, &t, &ev.Actor, &ev.Action, &ev.Cluster, &ev.SPIFFEID,
		&ev.Serial, &ev.Detail, &ev.PrevHash, &ev.Hash)
	if err != nil {
		return store.AuditEvent{}, err
	}
	ev.Time = fromUnix(t)
	return ev, nil
}

// querier is what reads need from a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// AuditEvents returns the events with Time >= since, in sequence order. The
// events are not verified; see VerifyAuditChain.
func (s *Store) AuditEvents(ctx context.Context, since time.Time) ([]store.AuditEvent, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: audit events: %w", store.ErrClosed)
	}
	var events []store.AuditEvent
	err := eachEvent(ctx, s.pool, since, func(ev store.AuditEvent) error {
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: audit events: %w", err)
	}
	return events, nil
}

// eachEvent calls fn for each event with Time >= since (all events for a
// zero since) in sequence order, stopping at fn's first error. Rows are
// streamed, so memory does not grow with the log.
func eachEvent(ctx context.Context, q querier, since time.Time, fn func(store.AuditEvent) error) error {
	sql := `SELECT ` + eventColumnList + ` FROM audit_events`
	var args []any
	if !since.IsZero() {
		sql += ` WHERE time >= $1`
		args = append(args, unixCeil(since))
	}
	sql += ` ORDER BY seq`
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return rows.Err()
}
