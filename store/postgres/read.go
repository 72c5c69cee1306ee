package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

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
