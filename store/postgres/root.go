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

var _ store.RootStore = (*Store)(nil)

// The RootStore writes are rare (an administrator adds a cluster, a cluster
// enrols, a root or intermediate rotates), so they are not batched: each
// runs a transaction of its own through writeTx, which extends the audit
// chain under the same audit_chain_head row lock as the batches.

// AddCluster registers c, or finds it if a cluster of that name exists with
// the same trust domain, and stores tok for it, with ev, in one transaction.
// A cluster of that name with another trust domain, or a token hash already
// stored, wraps store.ErrAlreadyExists and writes nothing. tok.Cluster may be
// empty; otherwise it must be c.Name.
func (s *Store) AddCluster(ctx context.Context, c store.Cluster, tok store.JoinToken, ev store.AuditEvent) error {
	if err := s.addCluster(ctx, c, tok, ev); err != nil {
		return fmt.Errorf("postgres: add cluster %s: %w", c.Name, err)
	}
	return nil
}

func (s *Store) addCluster(ctx context.Context, c store.Cluster, tok store.JoinToken, ev store.AuditEvent) error {
	if err := store.ValidateAddCluster(c, tok); err != nil {
		return err
	}
	if err := checkText([][2]string{{"name", c.Name}, {"trust domain", c.TrustDomain}, {"join token hash", tok.Hash}}); err != nil {
		return err
	}
	now := s.now()
	ev = sqlq.WithTime(ev, now)
	return s.writeTx(ctx, &ev, func(ctx context.Context, tx pgx.Tx) error {
		// Of two concurrent first registrations, the second waits here for
		// the first to commit and then finds its row.
		if _, err := tx.Exec(ctx, `INSERT INTO clusters (name, trust_domain, created_at, dns_names) VALUES ($1, $2, $3, $4)
			ON CONFLICT (name) DO NOTHING`, c.Name, c.TrustDomain, now.Unix(), sqlq.JoinDNSNames(c.DNSNames)); err != nil {
			return fmt.Errorf("insert cluster: %w", err)
		}
		var td string
		if err := tx.QueryRow(ctx, `SELECT trust_domain FROM clusters WHERE name = $1`, c.Name).Scan(&td); err != nil {
			return fmt.Errorf("read cluster: %w", err)
		}
		if td != c.TrustDomain {
			return fmt.Errorf("registered with trust domain %s: %w", td, store.ErrAlreadyExists)
		}
		// The hash is not logged: it is enough to find the row.
		return sqlq.InsertNew(ctx, on{tx}, "join token",
			insertJoinTokenSQL,
			tok.Hash, c.Name, tok.ExpiresAt.Unix(), now.Unix(), max(tok.Replicas, 1))
	})
}

// redeemSQL marks an unexpired token used (a one-time token only if
// unused) and returns its cluster and replicas. Of two concurrent
// redemptions of a one-time token the second waits for the first's row
// lock, then re-checks used_at = 0 against the committed row and matches
// nothing.
const redeemSQL = `UPDATE join_tokens t SET used_at = $2
	FROM clusters c
	WHERE t.hash = $1 AND (t.used_at = 0 OR t.replicas > 1) AND t.expires_at > $3 AND c.name = t.cluster
	RETURNING c.name, c.trust_domain, c.created_at, t.replicas`

// RedeemJoinToken marks the token with this hash used, if it has not
// expired at now (it is valid while now < ExpiresAt) and is not a one-time
// token already used, and returns its cluster and replicas, appending ev
// with Cluster filled in. Otherwise the error wraps store.ErrNotFound and
// nothing is written. Of two concurrent redemptions of a one-time token,
// from any number of processes, exactly one succeeds.
func (s *Store) RedeemJoinToken(ctx context.Context, hash string, now time.Time, ev store.AuditEvent) (store.Cluster, int, error) {
	var c store.Cluster
	var replicas int
	ev = sqlq.WithTime(ev, s.now())
	err := s.writeTx(ctx, &ev, func(ctx context.Context, tx pgx.Tx) error {
		var created int64
		// Stored whole seconds: e > now iff e > floor(now). used_at stays
		// non-zero, which is what marks the token used, whatever the clock.
		err := tx.QueryRow(ctx, redeemSQL, hash, max(now.Unix(), 1), now.Unix()).Scan(&c.Name, &c.TrustDomain, &created, &replicas)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("join token unknown, used or expired: %w", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("mark join token used: %w", err)
		}
		c.CreatedAt = sqlq.FromUnix(created)
		ev.Cluster = c.Name
		return nil
	})
	if err != nil {
		return store.Cluster{}, 0, fmt.Errorf("postgres: redeem join token: %w", err)
	}
	return c, replicas, nil
}

var (
	insertJoinTokenSQL = sqlq.InsertJoinTokenSQL(sqlq.Dollar)
)

// writeTx runs fn and then appends ev, chained after the locked chain head,
// in one transaction bounded by the commit timeout, and commits. ev is read
// after fn returns, so fn may fill it in. The head is locked after fn's
// writes, as in a batch, so the lock that serializes every appender is held
// only for the append and the commit.
func (s *Store) writeTx(parent context.Context, ev *store.AuditEvent, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := checkEvent(*ev); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(parent, s.commitTimeout)
	defer cancel()
	if err := s.runTx(ctx, ev, fn); err != nil {
		return s.timeoutError(parent, ctx, err)
	}
	return nil
}

func (s *Store) runTx(ctx context.Context, ev *store.AuditEvent, fn func(ctx context.Context, tx pgx.Tx) error) (err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			// The transaction's own error is the one worth reporting; a
			// rollback that fails closes the connection, which ends the
			// transaction too.
			_ = tx.Rollback(ctx)
		}
	}()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	head, err := scanHead(tx.QueryRow(ctx, lockHeadSQL))
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, appendEventsSQL, chainEvents(head, []write{{ev: *ev}})...)
	if err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("append audit event: advanced %d chain heads, want 1", tag.RowsAffected())
	}
	if err := tx.Commit(ctx); err != nil {
		if errors.Is(err, pgx.ErrTxCommitRollback) {
			return fmt.Errorf("commit: %w", err)
		}
		return commitError(err)
	}
	return nil
}

// tx runs fn through writeTx with the transaction as a sqlq.Querier.
func (s *Store) tx(ctx context.Context, ev *store.AuditEvent, fn func(context.Context, sqlq.Querier) error) error {
	return s.writeTx(ctx, ev, func(ctx context.Context, tx pgx.Tx) error { return fn(ctx, on{tx}) })
}
