package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// Certificate returns the certificate with the given serial, or an error
// wrapping store.ErrNotFound.
func (s *Store) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	if s.closed.Load() {
		return store.Certificate{}, fmt.Errorf("postgres: certificate: %w", store.ErrClosed)
	}
	c, err := sqlq.CertificateBySerial(ctx, on{s.pool}, sqlq.Dollar, serial)
	if err != nil {
		return store.Certificate{}, fmt.Errorf("postgres: %w", err)
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
	certs, err := sqlq.Certificates(ctx, on{s.pool}, sqlq.Dollar, f)
	if err != nil {
		return nil, fmt.Errorf("postgres: certificates: %w", err)
	}
	return certs, nil
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

// eachEvent calls fn for each event of q with Time >= since in sequence
// order, as sqlq.EachEvent does.
func eachEvent(ctx context.Context, q pgxQuerier, since time.Time, fn func(store.AuditEvent) error) error {
	return sqlq.EachEvent(ctx, on{q}, sqlq.Dollar, since, fn)
}
