package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// AuditEvents returns the events with Time >= since, in sequence order. The
// events are not verified; see VerifyAuditChain.
func (s *Store) AuditEvents(ctx context.Context, since time.Time) ([]store.AuditEvent, error) {
	var events []store.AuditEvent
	err := s.eachEvent(ctx, since, func(ev store.AuditEvent) error {
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit events: %w", err)
	}
	return events, nil
}

// VerifyAuditChain walks the whole audit chain from seq 1 and returns nil, an
// error wrapping the *store.BrokenLinkError of the first bad link, or an
// error reading the chain. It reads the chain as of one snapshot, so it runs
// alongside writes; its cost grows with the length of the log.
//
// A truncated tail is not a broken link: compare the chain's head with an
// anchor kept elsewhere to detect one.
func (s *Store) VerifyAuditChain(ctx context.Context) error {
	_, err := s.VerifyAuditHead(ctx)
	return err
}

// VerifyAuditHead verifies the chain as VerifyAuditChain does and returns
// the head of the chain as far as it verified: the last event on success
// (the zero ChainHead for an empty log), the last good event before a
// broken link.
func (s *Store) VerifyAuditHead(ctx context.Context) (store.ChainHead, error) {
	var v store.ChainVerifier
	if err := s.eachEvent(ctx, time.Time{}, v.Verify); err != nil {
		return v.Head(), fmt.Errorf("sqlite: verify audit chain: %w", err)
	}
	return v.Head(), nil
}

// eachEvent calls fn for each event with Time >= since (all events for a
// zero since) in sequence order, stopping at fn's first error.
func (s *Store) eachEvent(ctx context.Context, since time.Time, fn func(store.AuditEvent) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return sqlq.EachEvent(ctx, on{s.r}, sqlq.Question, since, fn)
}

// AuditHead returns the seq and hash of the last audit event (the zero
// ChainHead for an empty log): what a signed checkpoint records.
func (s *Store) AuditHead(ctx context.Context) (store.ChainHead, error) {
	if s.closed.Load() {
		return store.ChainHead{}, fmt.Errorf("sqlite: audit head: %w", store.ErrClosed)
	}
	var h store.ChainHead
	err := s.r.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ChainHead{}, nil
	}
	if err != nil {
		return store.ChainHead{}, fmt.Errorf("sqlite: audit head: %w", err)
	}
	return h, nil
}

// AuditHashAt returns the hash of the event at seq, or an error wrapping
// store.ErrNotFound.
func (s *Store) AuditHashAt(ctx context.Context, seq int64) ([]byte, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: audit hash: %w", store.ErrClosed)
	}
	var h []byte
	err := s.r.QueryRowContext(ctx, `SELECT hash FROM audit_events WHERE seq = ?`, seq).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: audit hash at seq %d: %w", seq, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit hash at seq %d: %w", seq, err)
	}
	return h, nil
}
