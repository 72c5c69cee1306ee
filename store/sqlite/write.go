package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// write is one queued write: an audit event, with the certificate it records
// for RecordIssuance.
type write struct {
	cert      *store.Certificate
	createdAt int64
	ev        store.AuditEvent
}

// RecordIssuance records cert and ev in one transaction, shared with other
// concurrent writes, and returns after it committed. An error means neither
// was recorded; a serial that is already recorded yields an error wrapping
// store.ErrAlreadyExists. See [store.GroupCommitter.Do] for how ctx is
// honoured.
func (s *Store) RecordIssuance(ctx context.Context, cert store.Certificate, ev store.AuditEvent) error {
	if cert.Serial == "" {
		return errors.New("sqlite: record issuance: empty serial")
	}
	now := s.now()
	if err := s.do(ctx, write{cert: &cert, createdAt: now.Unix(), ev: sqlq.WithTime(ev, now)}); err != nil {
		return fmt.Errorf("sqlite: record issuance: %w", err)
	}
	return nil
}

// AppendAudit appends ev to the audit chain and returns after it committed.
func (s *Store) AppendAudit(ctx context.Context, ev store.AuditEvent) error {
	if err := s.do(ctx, write{ev: sqlq.WithTime(ev, s.now())}); err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	return nil
}

func (s *Store) do(ctx context.Context, w write) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return s.gc.Do(ctx, w)
}

// writeStmts are prepared once on the writer connection and bound to each
// batch's transaction.
type writeStmts struct {
	head, insertCert, insertEvent *sql.Stmt
}

func (w *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	var err error
	if w.head, err = db.PrepareContext(ctx,
		`SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`); err != nil {
		return err
	}
	if w.insertCert, err = db.PrepareContext(ctx,
		`INSERT INTO certificates (serial, spiffe_id, cluster, not_before, not_after, fingerprint, pod_uid, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
		return err
	}
	w.insertEvent, err = db.PrepareContext(ctx,
		`INSERT INTO audit_events (seq, time, actor, action, cluster, spiffe_id, serial, detail, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	return err
}

func (w *writeStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{w.head, w.insertCert, w.insertEvent} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// commitBatch is the group committer's CommitFunc: one transaction for the
// whole batch. The fast path inserts every write directly; only if one of
// them fails (a duplicate serial, say) is the batch rolled back and redone
// with one savepoint per write, so that the bad write fails alone. Savepoints
// cost three statements per write, and failures are rare.
func (s *Store) commitBatch(ctx context.Context, batch []write) (itemErrs []error, err error) {
	itemErrs, err = s.commitTx(ctx, batch, false)
	if errors.Is(err, errItemFailed) {
		return s.commitTx(ctx, batch, true)
	}
	return itemErrs, err
}

// errItemFailed aborts a fast-path transaction in which one write failed.
var errItemFailed = errors.New("a write in the batch failed")

func (s *Store) commitTx(ctx context.Context, batch []write, savepoints bool) (itemErrs []error, err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			// The transaction's own error is the one worth reporting.
			_ = tx.Rollback()
		}
	}()
	head, err := readHead(ctx, tx.StmtContext(ctx, s.stmts.head))
	if err != nil {
		return nil, fmt.Errorf("read audit chain head: %w", err)
	}
	b := batchTx{
		tx:          tx,
		insertCert:  tx.StmtContext(ctx, s.stmts.insertCert),
		insertEvent: tx.StmtContext(ctx, s.stmts.insertEvent),
	}
	for i, w := range batch {
		ev := head.Next(w.ev)
		var itemErr error
		if savepoints {
			if itemErr, err = b.apply(ctx, w, ev); err != nil {
				return nil, err
			}
		} else if itemErr = b.insert(ctx, w, ev); itemErr != nil {
			return nil, errItemFailed
		}
		if itemErr != nil {
			if itemErrs == nil {
				itemErrs = make([]error, len(batch))
			}
			itemErrs[i] = itemErr
			continue
		}
		head = store.HeadOf(ev)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return itemErrs, nil
}

func readHead(ctx context.Context, st *sql.Stmt) (store.ChainHead, error) {
	var h store.ChainHead
	err := st.QueryRowContext(ctx).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ChainHead{}, nil
	}
	return h, err
}

type batchTx struct {
	tx                      *sql.Tx
	insertCert, insertEvent *sql.Stmt
}

// apply writes w, with ev as its chained audit event, under a savepoint.
// itemErr means w was rolled back and the transaction can go on; err means
// the transaction itself is broken.
func (b batchTx) apply(ctx context.Context, w write, ev store.AuditEvent) (itemErr, err error) {
	if _, err := b.tx.ExecContext(ctx, "SAVEPOINT item"); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	itemErr = b.insert(ctx, w, ev)
	if itemErr != nil {
		// ROLLBACK TO keeps the savepoint open; RELEASE below ends it.
		if _, err := b.tx.ExecContext(ctx, "ROLLBACK TO item"); err != nil {
			return nil, fmt.Errorf("rollback to savepoint after %w: %w", itemErr, err)
		}
	}
	if _, err := b.tx.ExecContext(ctx, "RELEASE item"); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	return itemErr, nil
}

func (b batchTx) insert(ctx context.Context, w write, ev store.AuditEvent) error {
	if c := w.cert; c != nil {
		_, err := b.insertCert.ExecContext(ctx, c.Serial, c.SPIFFEID, c.Cluster,
			c.NotBefore.Unix(), c.NotAfter.Unix(), c.Fingerprint, c.PodUID, w.createdAt)
		if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
			return fmt.Errorf("certificate %s: %w", c.Serial, store.ErrAlreadyExists)
		}
		if err != nil {
			return fmt.Errorf("insert certificate: %w", err)
		}
	}
	return insertEvent(ctx, b.insertEvent, ev)
}

// insertEvent inserts ev, already chained, with st (writeStmts.insertEvent
// bound to the transaction).
func insertEvent(ctx context.Context, st *sql.Stmt, ev store.AuditEvent) error {
	_, err := st.ExecContext(ctx, ev.Seq, ev.Time.Unix(), ev.Actor, ev.Action,
		ev.Cluster, ev.SPIFFEID, ev.Serial, ev.Detail, ev.PrevHash, ev.Hash)
	if err != nil {
		return fmt.Errorf("insert audit event: %w", err)
	}
	return nil
}

func isConstraint(err error, code int) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == code
}
