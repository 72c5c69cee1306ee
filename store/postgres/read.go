package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// Certificate returns the certificate with the given serial, or an error
// wrapping store.ErrNotFound.
func (s *Store) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	if s.closed.Load() {
		return store.Certificate{}, fmt.Errorf("postgres: certificate: %w", store.ErrClosed)
	}
	row := s.pool.QueryRow(ctx, `SELECT `+sqlq.CertColumns+` FROM certificates WHERE serial = $1`, serial)
	c, err := sqlq.ScanCert(row)
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
	q, args := sqlq.CertificatesQuery(f, sqlq.Dollar)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: certificates: %w", err)
	}
	certs, err := pgx.CollectRows(rows, collectable(sqlq.ScanCert))
	if err != nil {
		return nil, fmt.Errorf("postgres: certificates: %w", err)
	}
	return certs, nil
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
	sql, args := sqlq.EventsQuery(since, sqlq.Dollar)
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		ev, err := sqlq.ScanEvent(rows)
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return rows.Err()
}

// collectable adapts a sqlq scan function to pgx.CollectRows.
func collectable[T any](scan func(sqlq.Scanner) (T, error)) pgx.RowToFunc[T] {
	return func(row pgx.CollectableRow) (T, error) { return scan(row) }
}
