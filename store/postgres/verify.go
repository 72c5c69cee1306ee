package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshca/meshca/store"
)

// VerifyAuditChain walks the whole audit chain from seq 1, then checks that
// it ends at the recorded chain head (audit_chain_head). It returns nil, an
// error wrapping the *store.BrokenLinkError of the first bad link, or an
// error reading the chain. It reads one snapshot (a REPEATABLE READ, READ ONLY transaction),
// so it runs alongside writes; its cost grows with the length of the log.
//
// Because the head row is updated in the same transaction as the events,
// deleting the last events shows as a missing event, which a chain on its
// own cannot show. Someone who can also rewrite audit_chain_head can still
// truncate or rewrite the tail undetected: compare the head with an anchor
// kept elsewhere to rule that out.
func (s *Store) VerifyAuditChain(ctx context.Context) error {
	_, err := s.VerifyAuditHead(ctx)
	return err
}

// VerifyAuditHead verifies the chain as VerifyAuditChain does and returns
// the head of the chain as far as it verified: the last event on success
// (the zero ChainHead for an empty log), the last good event before a
// broken link.
func (s *Store) VerifyAuditHead(ctx context.Context) (store.ChainHead, error) {
	if s.closed.Load() {
		return store.ChainHead{}, fmt.Errorf("postgres: verify audit chain: %w", store.ErrClosed)
	}
	tx, err := s.pool.BeginTx(ctx, snapshot)
	if err != nil {
		return store.ChainHead{}, fmt.Errorf("postgres: verify audit chain: %w", err)
	}
	defer tx.Rollback(ctx)
	head, err := verifyChain(ctx, tx)
	if err != nil {
		return head, fmt.Errorf("postgres: verify audit chain: %w", err)
	}
	return head, nil
}

// VerifyAuditLog verifies the audit chain of the database at dsn, as
// [Store.VerifyAuditChain] does, over a single connection of its own, and
// returns the head of the chain as far as it verified. It
// only reads: it runs no migrations and takes no locks that writers wait
// for, so it is safe against a live database (`meshca audit verify`).
//
// The chain must also pass through every anchor (see
// [store.ChainVerifier.Anchor]); a chain that does not fails with an error
// wrapping a *store.AnchorError. Unlike the recorded head, an anchor kept
// outside the database shows a tail that was cut off or rewritten by someone
// who could also rewrite audit_chain_head.
func VerifyAuditLog(ctx context.Context, dsn string, anchors ...store.ChainHead) (store.ChainHead, error) {
	head, err := verifyAuditLog(ctx, dsn, anchors)
	if err != nil {
		return head, fmt.Errorf("postgres: verify audit log: %w", err)
	}
	return head, nil
}

func verifyAuditLog(ctx context.Context, dsn string, anchors []store.ChainHead) (store.ChainHead, error) {
	pcfg, err := pgxpool.ParseConfig(dsn) // the same DSNs as Open
	if err != nil {
		return store.ChainHead{}, fmt.Errorf("dsn: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg.ConnConfig)
	if err != nil {
		return store.ChainHead{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, snapshot)
	if err != nil {
		return store.ChainHead{}, err
	}
	defer tx.Rollback(ctx)
	return verifyChain(ctx, tx, anchors...)
}

// snapshot reads the chain and its head as of one instant.
var snapshot = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// verifyChain checks every event in sequence order, then that the chain
// passes through the anchors, then the end of the chain against the
// recorded head.
func verifyChain(ctx context.Context, q pgxQuerier, anchors ...store.ChainHead) (store.ChainHead, error) {
	var recorded store.ChainHead
	err := q.QueryRow(ctx, `SELECT seq, hash FROM audit_chain_head WHERE id`).Scan(&recorded.Seq, &recorded.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ChainHead{}, errors.New("the audit_chain_head row is missing")
	}
	if err != nil {
		return store.ChainHead{}, fmt.Errorf("read chain head: %w", err)
	}
	var v store.ChainVerifier
	for _, a := range anchors {
		v.Anchor(a)
	}
	if err := eachEvent(ctx, q, time.Time{}, v.Verify); err != nil {
		return v.Head(), err
	}
	if err := v.Finish(); err != nil {
		return v.Head(), err
	}
	return v.Head(), checkHead(v.Head(), recorded)
}

// checkHead compares the last event of a chain that verified with the head
// recorded alongside it.
func checkHead(got, recorded store.ChainHead) error {
	switch {
	case got.Seq < recorded.Seq:
		return &store.BrokenLinkError{Seq: got.Seq + 1,
			Reason: fmt.Sprintf("missing event: the chain head records seq %d", recorded.Seq)}
	case got.Seq > recorded.Seq:
		return &store.BrokenLinkError{Seq: recorded.Seq + 1,
			Reason: fmt.Sprintf("event after the recorded chain head (seq %d)", recorded.Seq)}
	case !bytes.Equal(got.Hash, recorded.Hash):
		return &store.BrokenLinkError{Seq: got.Seq, Reason: "hash differs from the recorded chain head"}
	}
	return nil
}

// AuditHead returns the seq and hash of the last audit event, as recorded in
// audit_chain_head: what a signed checkpoint records.
func (s *Store) AuditHead(ctx context.Context) (store.ChainHead, error) {
	if s.closed.Load() {
		return store.ChainHead{}, fmt.Errorf("postgres: audit head: %w", store.ErrClosed)
	}
	var h store.ChainHead
	err := s.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_chain_head WHERE id`).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ChainHead{}, errors.New("postgres: audit head: the audit_chain_head row is missing")
	}
	if err != nil {
		return store.ChainHead{}, fmt.Errorf("postgres: audit head: %w", err)
	}
	return h, nil
}

// AuditHashAt returns the hash of the event at seq, or an error wrapping
// store.ErrNotFound.
func (s *Store) AuditHashAt(ctx context.Context, seq int64) ([]byte, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("postgres: audit hash: %w", store.ErrClosed)
	}
	var h []byte
	err := s.pool.QueryRow(ctx, `SELECT hash FROM audit_events WHERE seq = $1`, seq).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: audit hash at seq %d: %w", seq, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: audit hash at seq %d: %w", seq, err)
	}
	return h, nil
}
