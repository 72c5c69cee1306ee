package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// ErrCommitOutcomeUnknown is wrapped by the error of a write whose COMMIT
// was sent but not answered (the connection broke, or the commit timed
// out). The write's record may exist; the caller must treat the write as
// failed, so at worst a record exists for a certificate never released.
var ErrCommitOutcomeUnknown = errors.New("commit outcome unknown")

// write is one queued write: an audit event, with the certificate it records
// for RecordIssuance.
type write struct {
	cert      *store.Certificate
	createdAt int64
	ev        store.AuditEvent
}

// RecordIssuance records cert and ev in one transaction, shared with other
// concurrent writes, and returns after it committed. An error means the
// certificate must not be released: nothing was recorded, or (wrapping
// ErrCommitOutcomeUnknown) the database could not confirm the commit. A
// serial that is already recorded yields an error wrapping
// store.ErrAlreadyExists. See [store.GroupCommitter.Do] for how ctx is
// honoured.
func (s *Store) RecordIssuance(ctx context.Context, cert store.Certificate, ev store.AuditEvent) error {
	if err := checkCert(cert); err != nil {
		return fmt.Errorf("postgres: record issuance: %w", err)
	}
	now := s.now()
	if err := s.do(ctx, write{cert: &cert, createdAt: now.Unix(), ev: sqlq.WithTime(ev, now)}); err != nil {
		return fmt.Errorf("postgres: record issuance: %w", err)
	}
	return nil
}

// AppendAudit appends ev to the audit chain and returns after it committed.
func (s *Store) AppendAudit(ctx context.Context, ev store.AuditEvent) error {
	if err := s.do(ctx, write{ev: sqlq.WithTime(ev, s.now())}); err != nil {
		return fmt.Errorf("postgres: append audit: %w", err)
	}
	return nil
}

func (s *Store) do(ctx context.Context, w write) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := checkEvent(w.ev); err != nil {
		return err
	}
	return s.gc.Do(ctx, w)
}

func checkCert(c store.Certificate) error {
	if c.Serial == "" {
		return errors.New("empty serial")
	}
	return checkText([][2]string{{"serial", c.Serial}, {"spiffe id", c.SPIFFEID}, {"cluster", c.Cluster},
		{"fingerprint", c.Fingerprint}, {"pod uid", c.PodUID}})
}

func checkEvent(ev store.AuditEvent) error {
	return checkText([][2]string{{"actor", ev.Actor}, {"action", ev.Action}, {"cluster", ev.Cluster},
		{"spiffe id", ev.SPIFFEID}, {"serial", ev.Serial}, {"detail", ev.Detail}})
}

// checkText refuses, before it is queued, text that a UTF8 database would
// reject, so that it fails alone instead of failing its whole batch.
func checkText(fields [][2]string) error {
	for _, f := range fields {
		if !utf8.ValidString(f[1]) || strings.IndexByte(f[1], 0) >= 0 {
			return fmt.Errorf("%s is not valid UTF-8 text without NUL", f[0])
		}
	}
	return nil
}

// commitBatch is the group committer's CommitFunc: one transaction for the
// whole batch, bounded by the commit timeout.
func (s *Store) commitBatch(parent context.Context, batch []write) ([]error, error) {
	ctx, cancel := context.WithTimeout(parent, s.commitTimeout)
	defer cancel()
	itemErrs, err := s.commitTx(ctx, batch)
	if err != nil {
		return nil, s.timeoutError(parent, ctx, err)
	}
	return itemErrs, nil
}

// timeoutError returns err, the error of a transaction run under ctx, a
// context derived from parent with the commit timeout. When it was the store's
// own deadline, not the caller's, that ended the transaction, the error is
// reported without wrapping context.DeadlineExceeded, which callers would
// take for their own deadline (and the issuer would not map to Unavailable).
func (s *Store) timeoutError(parent, ctx context.Context, err error) error {
	if ctx.Err() == nil || parent.Err() != nil {
		return err
	}
	msg := fmt.Sprintf("transaction timed out after %v (%v)", s.commitTimeout, err)
	if errors.Is(err, ErrCommitOutcomeUnknown) {
		return fmt.Errorf("%w: %s", ErrCommitOutcomeUnknown, msg)
	}
	return errors.New(msg)
}

const (
	insertCertsSQL = `INSERT INTO certificates
		(serial, spiffe_id, cluster, not_before, not_after, fingerprint, pod_uid, created_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::bigint[])
		ON CONFLICT (serial) DO NOTHING
		RETURNING serial`
	lockHeadSQL = `SELECT seq, hash FROM audit_chain_head WHERE id FOR UPDATE`
	// One statement appends the events and advances the head: a
	// data-modifying WITH runs whether or not it is referenced.
	appendEventsSQL = `WITH appended AS (
		INSERT INTO audit_events (seq, time, actor, action, cluster, spiffe_id, serial, detail, prev_hash, hash)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bytea[])
	)
	UPDATE audit_chain_head SET seq = $11, hash = $12 WHERE id`
)

// commitTx runs the batch transaction in two round trips. The first sends
// BEGIN, the certificate insert (a serial already recorded, or repeated
// within the batch, fails its own write only) and the chain head lock; the
// second, once the events of the writes that remain are chained after that
// head, appends them, advances the head and sends COMMIT.
func (s *Store) commitTx(ctx context.Context, batch []write) ([]error, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	// After any error below the connection is left inside a transaction (or
	// broken); Release then closes it, which rolls the transaction back.
	defer conn.Release()
	certs, dup := collectCerts(batch)
	inserted, head, err := beginBatch(ctx, conn.Conn(), certs)
	if err != nil {
		return nil, err
	}
	accepted, itemErrs := acceptWrites(batch, dup, inserted)
	if err := finishBatch(ctx, conn.Conn(), head, accepted); err != nil {
		return nil, err
	}
	return itemErrs, nil
}

// collectCerts returns the certificates of batch column by column, and marks
// the writes whose serial an earlier write of the batch already has (the
// first one wins, as in SQLite).
func collectCerts(batch []write) (cols certColumns, dup []bool) {
	seen := make(map[string]bool, len(batch))
	dup = make([]bool, len(batch))
	for i, w := range batch {
		if w.cert == nil {
			continue
		}
		if seen[w.cert.Serial] {
			dup[i] = true
			continue
		}
		seen[w.cert.Serial] = true
		cols.add(w)
	}
	return cols, dup
}

// acceptWrites returns the writes that go on to the audit chain, in batch
// order, and itemErrs (nil, or one per write) for those that do not.
func acceptWrites(batch []write, dup []bool, inserted map[string]bool) (accepted []write, itemErrs []error) {
	for i, w := range batch {
		if w.cert != nil && (dup[i] || !inserted[w.cert.Serial]) {
			if itemErrs == nil {
				itemErrs = make([]error, len(batch))
			}
			itemErrs[i] = fmt.Errorf("certificate %s: %w", w.cert.Serial, store.ErrAlreadyExists)
			continue
		}
		accepted = append(accepted, w)
	}
	return accepted, itemErrs
}

// certColumns holds the certificates of a batch column by column, for
// unnest.
type certColumns struct {
	serial, spiffeID, cluster, fingerprint, podUID []string
	notBefore, notAfter, createdAt                 []int64
}

func (c *certColumns) add(w write) {
	cert := w.cert
	c.serial = append(c.serial, cert.Serial)
	c.spiffeID = append(c.spiffeID, cert.SPIFFEID)
	c.cluster = append(c.cluster, cert.Cluster)
	c.notBefore = append(c.notBefore, cert.NotBefore.Unix())
	c.notAfter = append(c.notAfter, cert.NotAfter.Unix())
	c.fingerprint = append(c.fingerprint, cert.Fingerprint)
	c.podUID = append(c.podUID, cert.PodUID)
	c.createdAt = append(c.createdAt, w.createdAt)
}

// beginBatch opens the transaction, inserts certs and locks the chain head,
// in one round trip, and returns the serials inserted and the head. Nothing
// is committed yet, so every error here is a certain failure. The head row
// lock is held until the transaction ends, which serializes appends across
// every Store (and process) sharing the database.
func beginBatch(ctx context.Context, conn *pgx.Conn, certs certColumns) (map[string]bool, store.ChainHead, error) {
	var head store.ChainHead
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if len(certs.serial) > 0 {
		b.Queue(insertCertsSQL, certs.serial, certs.spiffeID, certs.cluster,
			certs.notBefore, certs.notAfter, certs.fingerprint, certs.podUID, certs.createdAt)
	}
	b.Queue(lockHeadSQL)
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, head, fmt.Errorf("begin: %w", err)
	}
	inserted := map[string]bool{}
	if len(certs.serial) > 0 {
		rows, _ := br.Query() // CollectRows reports the query's error
		serials, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, head, fmt.Errorf("insert certificates: %w", err)
		}
		for _, s := range serials {
			inserted[s] = true
		}
	}
	head, err := scanHead(br.QueryRow())
	if err != nil {
		return nil, head, err
	}
	if err := br.Close(); err != nil {
		return nil, head, fmt.Errorf("begin: %w", err)
	}
	return inserted, head, nil
}

// scanHead reads the result of lockHeadSQL.
func scanHead(row pgx.Row) (store.ChainHead, error) {
	var head store.ChainHead
	err := row.Scan(&head.Seq, &head.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return head, errors.New("lock audit chain head: the audit_chain_head row is missing")
	}
	if err != nil {
		return head, fmt.Errorf("lock audit chain head: %w", err)
	}
	return head, nil
}

// finishBatch chains the events of batch after head, appends them, advances
// the head and commits, in one round trip. Once that is sent the outcome may
// be unknown; see commitError.
func finishBatch(ctx context.Context, conn *pgx.Conn, head store.ChainHead, batch []write) error {
	b := &pgx.Batch{}
	if len(batch) > 0 {
		b.Queue(appendEventsSQL, chainEvents(head, batch)...)
	}
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if len(batch) > 0 {
		tag, err := br.Exec()
		if err != nil {
			return commitError(fmt.Errorf("append audit events: %w", err))
		}
		if tag.RowsAffected() != 1 {
			// COMMIT is already on its way.
			return fmt.Errorf("append audit events: %w: advanced %d chain heads, want 1", ErrCommitOutcomeUnknown, tag.RowsAffected())
		}
	}
	tag, err := br.Exec()
	if err != nil {
		return commitError(err)
	}
	if err := br.Close(); err != nil {
		return commitError(err)
	}
	if tag.String() != "COMMIT" {
		// An aborted transaction answers COMMIT with ROLLBACK.
		return fmt.Errorf("commit: %w", pgx.ErrTxCommitRollback)
	}
	return nil
}

// chainEvents numbers and hashes the writes' events after head and returns
// the arguments of appendEventsSQL.
func chainEvents(head store.ChainHead, batch []write) []any {
	n := len(batch)
	seq, when := make([]int64, n), make([]int64, n)
	text := make([][]string, 6) // actor, action, cluster, spiffe_id, serial, detail
	for i := range text {
		text[i] = make([]string, n)
	}
	prevHash, hash := make([][]byte, n), make([][]byte, n)
	for i, w := range batch {
		ev := head.Next(w.ev)
		seq[i], when[i] = ev.Seq, ev.Time.Unix()
		for j, v := range [...]string{ev.Actor, ev.Action, ev.Cluster, ev.SPIFFEID, ev.Serial, ev.Detail} {
			text[j][i] = v
		}
		prevHash[i], hash[i] = ev.PrevHash, ev.Hash
		head = store.HeadOf(ev)
	}
	return []any{seq, when, text[0], text[1], text[2], text[3], text[4], text[5], prevHash, hash, head.Seq, head.Hash}
}

// commitError tells a COMMIT that certainly failed from one whose outcome is
// unknown: the request may have reached the server and committed even though
// no answer came back.
func commitError(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case pgconn.SafeToRetry(err):
		return fmt.Errorf("commit: %w", err)
	case errors.As(err, &pgErr) && pgErr.SeverityUnlocalized == "ERROR":
		// The server answered with an error, so it skipped or rolled back
		// the COMMIT. (A FATAL, such as an administrator's shutdown, may
		// come after the commit itself.)
		return fmt.Errorf("commit: %w", err)
	default:
		return fmt.Errorf("commit: %w: %w", ErrCommitOutcomeUnknown, err)
	}
}
