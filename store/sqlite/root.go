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

var _ store.RootStore = (*Store)(nil)

// The RootStore writes are rare (an administrator adds a cluster, a cluster
// enrols, a root or intermediate rotates), so they are not batched: each
// runs its own transaction on the writer connection through writeTx.

// AddCluster registers c, or finds it if a cluster of that name exists with
// the same trust domain, and stores tok for it, with ev, in one transaction.
// A cluster of that name with another trust domain, or a token hash already
// stored, wraps store.ErrAlreadyExists and writes nothing. tok.Cluster may be
// empty; otherwise it must be c.Name.
func (s *Store) AddCluster(ctx context.Context, c store.Cluster, tok store.JoinToken, ev store.AuditEvent) error {
	if err := s.addCluster(ctx, c, tok, ev); err != nil {
		return fmt.Errorf("sqlite: add cluster %s: %w", c.Name, err)
	}
	return nil
}

func (s *Store) addCluster(ctx context.Context, c store.Cluster, tok store.JoinToken, ev store.AuditEvent) error {
	if err := store.ValidateAddCluster(c, tok); err != nil {
		return err
	}
	now := s.now()
	ev = sqlq.WithTime(ev, now)
	return s.writeTx(ctx, &ev, func(tx *sql.Tx) error {
		var td string
		err := tx.QueryRowContext(ctx, `SELECT trust_domain FROM clusters WHERE name = ?`, c.Name).Scan(&td)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.ExecContext(ctx, `INSERT INTO clusters (name, trust_domain, created_at, dns_names) VALUES (?, ?, ?, ?)`,
				c.Name, c.TrustDomain, now.Unix(), sqlq.JoinDNSNames(c.DNSNames)); err != nil {
				return fmt.Errorf("insert cluster: %w", err)
			}
		case err != nil:
			return fmt.Errorf("read cluster: %w", err)
		case td != c.TrustDomain:
			return fmt.Errorf("registered with trust domain %s: %w", td, store.ErrAlreadyExists)
		}
		// The hash is not logged: it is enough to find the row.
		return sqlq.InsertNew(ctx, on{tx}, "join token",
			insertJoinTokenSQL,
			tok.Hash, c.Name, tok.ExpiresAt.Unix(), now.Unix(), max(tok.Replicas, 1))
	})
}

// RedeemJoinToken marks the token with this hash used, if it has not
// expired at now (it is valid while now < ExpiresAt) and is not a one-time
// token already used, and returns its cluster and replicas, appending ev
// with Cluster filled in. Otherwise the error wraps store.ErrNotFound and
// nothing is written. Redemptions are serialized by the writer connection,
// so of two concurrent ones of a one-time token exactly one succeeds.
func (s *Store) RedeemJoinToken(ctx context.Context, hash string, now time.Time, ev store.AuditEvent) (store.Cluster, int, error) {
	var c store.Cluster
	var replicas int
	ev = sqlq.WithTime(ev, s.now())
	err := s.writeTx(ctx, &ev, func(tx *sql.Tx) error {
		// Stored whole seconds: e > now iff e > floor(now). used_at stays
		// non-zero, which is what marks a one-time token used, whatever
		// the clock; a token of more replicas records its last use.
		err := tx.QueryRowContext(ctx, `UPDATE join_tokens SET used_at = ?
			WHERE hash = ? AND (used_at = 0 OR replicas > 1) AND expires_at > ? RETURNING cluster, replicas`,
			max(now.Unix(), 1), hash, now.Unix()).Scan(&c.Name, &replicas)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("join token unknown, used or expired: %w", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("mark join token used: %w", err)
		}
		name := c.Name
		c, err = sqlq.ScanCluster(tx.QueryRowContext(ctx, `SELECT `+sqlq.ClusterColumns+` FROM clusters WHERE name = ?`, name))
		if err != nil {
			return fmt.Errorf("read cluster %s: %w", name, err)
		}
		ev.Cluster = c.Name
		return nil
	})
	if err != nil {
		return store.Cluster{}, 0, fmt.Errorf("sqlite: redeem join token: %w", err)
	}
	return c, replicas, nil
}

var (
	insertJoinTokenSQL = sqlq.InsertJoinTokenSQL(sqlq.Question)
)

// writeTx runs fn and then appends ev, chained after the current head, in
// one transaction on the writer connection, and commits. ev is read after
// fn returns, so fn may fill it in. The writer connection is handed to one
// transaction at a time, so this never interleaves with a group-commit
// batch: whichever commits second chains after the other.
func (s *Store) writeTx(ctx context.Context, ev *store.AuditEvent, fn func(tx *sql.Tx) error) (err error) {
	s.direct.RLock()
	defer s.direct.RUnlock()
	if s.closed.Load() {
		return store.ErrClosed
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			// The transaction's own error is the one worth reporting.
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	head, err := readHead(ctx, tx.StmtContext(ctx, s.stmts.head))
	if err != nil {
		return fmt.Errorf("read audit chain head: %w", err)
	}
	if err := insertEvent(ctx, tx.StmtContext(ctx, s.stmts.insertEvent), head.Next(*ev)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// tx runs fn through writeTx with the transaction as a sqlq.Querier.
func (s *Store) tx(ctx context.Context, ev *store.AuditEvent, fn func(context.Context, sqlq.Querier) error) error {
	return s.writeTx(ctx, ev, func(tx *sql.Tx) error { return fn(ctx, on{tx}) })
}
