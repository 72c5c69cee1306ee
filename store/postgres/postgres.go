// Package postgres is the production store: PostgreSQL through pgx v5
// (pgxpool), shared by every issuer replica of a cluster.
//
// Durability: a write method returns only after its transaction committed
// (PostgreSQL's default synchronous_commit=on flushes the WAL first). Writes
// go through a [store.GroupCommitter]: concurrent writes share one
// transaction, so N concurrent issuances cost about one WAL flush, not N.
//
// Audit chain order across replicas: every batch transaction locks the
// one-row table audit_chain_head (SELECT ... FOR UPDATE), numbers and hashes
// its events after the head it read, and advances the head before COMMIT.
// The row lock serializes appends from all replicas in the database itself,
// so seq has no gaps and each prev_hash is the hash of the event committed
// just before, whatever the number of replicas. (A row lock was chosen over
// pg_advisory_xact_lock because the same row also holds the head, which
// makes reading it O(1) and lets verification detect a deleted tail.) The
// lock is taken after the certificates are inserted, so it is held only for
// the audit insert, the head update and the commit. The rare writes of the
// root service and of revocation (the [store.RootStore] and
// [store.RevocationStore] methods) are not batched: each runs a transaction
// of its own that takes the same lock the same way.
//
// One bad write cannot fail the others in its batch: certificates are
// inserted with ON CONFLICT DO NOTHING, and a write whose serial was already
// recorded is answered with store.ErrAlreadyExists and left out of the
// audit chain; text that PostgreSQL cannot store (invalid UTF-8, NUL) is
// refused before it is queued.
//
// Outages: a batch that cannot reach the database fails, and every write in
// it returns an error (the issuer then fails closed with Unavailable). The
// pool replaces broken connections by itself, so writes succeed again as soon
// as the database is back, without restarting anything. If the connection
// breaks while COMMIT is in flight the outcome is unknown: the write fails
// with an error wrapping [ErrCommitOutcomeUnknown], and its record may or may
// not exist (a record without a released certificate, never the reverse).
//
// Times are stored as bigint Unix seconds, UTC, as in the SQLite store.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// Config configures Open.
type Config struct {
	// DSN is a PostgreSQL connection string (URL or key=value form),
	// including pgxpool's pool_* parameters. Required. The database must use
	// the UTF8 encoding.
	DSN string
	// Now is the store's clock, used for created_at and for audit events
	// without a Time. Nil means time.Now. It exists so that a service
	// under test on a fixed or moved clock (served over real TLS, so not
	// in a synctest bubble) stamps its rows on that same clock: audit
	// order and "active now" queries compare the two.
	Now func() time.Time
	// MaxConns caps the pool's connections. Zero keeps the DSN's
	// pool_max_conns, or pgxpool's default (the larger of 4 and the number of
	// CPUs). Writes use one connection at a time; the rest serve reads.
	MaxConns int32
	// CommitTimeout bounds one batch transaction, from taking a connection
	// to COMMIT, so a database that hangs rather than refuses fails the
	// batch instead of stalling the issuer. Zero means 10s. Unless the DSN
	// sets idle_in_transaction_session_timeout, the store's sessions get
	// that value too, so the server ends a transaction whose process stalled
	// and frees the chain head for the other replicas.
	CommitTimeout time.Duration
	// GroupCommit tunes write batching; the zero value batches up to 256
	// writes without waiting. MaxBatch 1 commits every write on its own.
	GroupCommit store.GroupCommitConfig
}

// Validate reports whether c can be used by Open.
func (c Config) Validate() error {
	switch {
	case c.DSN == "":
		return errors.New("empty dsn")
	case c.MaxConns < 0:
		return fmt.Errorf("negative max conns %d", c.MaxConns)
	case c.CommitTimeout < 0:
		return fmt.Errorf("negative commit timeout %v", c.CommitTimeout)
	}
	if _, err := pgxpool.ParseConfig(c.DSN); err != nil {
		return fmt.Errorf("dsn: %w", err) // pgconn redacts passwords
	}
	return c.GroupCommit.Validate()
}

// Store is the PostgreSQL implementation of [store.Store],
// [store.RootStore] and [store.RevocationStore]. It is safe for concurrent
// use, and any number of Stores, in any number of processes, may share one
// database.
type Store struct {
	// Reads serves the plain reads from the pool, Writes the
	// administrative writes through writeTx.
	sqlq.Reads
	sqlq.Writes
	now           func() time.Time
	commitTimeout time.Duration
	pool          *pgxpool.Pool
	gc            *store.GroupCommitter[write]
	closed        atomic.Bool
}

var (
	_ store.Store               = (*Store)(nil)
	_ store.StandaloneRootStore = (*Store)(nil)
)

// Open connects to cfg.DSN, applies pending migrations (under an advisory
// lock, so replicas may start together; see [Migrate]) and starts the
// writer. The caller must Close the Store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s, err := open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	return s, nil
}

func open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = 10 * time.Second
	}
	if _, err := migrate(ctx, cfg.DSN); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, err
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	if _, set := pcfg.ConnConfig.RuntimeParams[idleInTxTimeout]; !set {
		// A process that stalls inside a batch transaction (between its two
		// round trips) must not hold the chain head lock, and so stop every
		// replica's writes, for longer than a batch may take.
		pcfg.ConnConfig.RuntimeParams[idleInTxTimeout] = strconv.FormatInt(cfg.CommitTimeout.Milliseconds(), 10)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	if err := checkEncoding(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{now: cfg.Now, commitTimeout: cfg.CommitTimeout, pool: pool}
	s.Writes = sqlq.Writes{Backend: "postgres", Ph: sqlq.Dollar, Now: cfg.Now, Tx: s.tx, CheckText: checkText,
		Flag: func(b bool) any { return b }, KeepCertificatesRevoked: keepCertificatesRevoked,
		Direct: s.direct, Prune: on{pool}, Closed: &s.closed}
	s.Reads = sqlq.Reads{Backend: "postgres", DB: on{pool}, Ph: sqlq.Dollar, ClusterOrder: `name COLLATE "C"`, Closed: &s.closed}
	s.gc = store.NewGroupCommitter(cfg.GroupCommit, s.commitBatch)
	return s, nil
}

// direct runs fn on the pool unless the Store is closed.
func (s *Store) direct(fn func(sqlq.Querier) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return fn(on{s.pool})
}

const idleInTxTimeout = "idle_in_transaction_session_timeout"

// checkEncoding makes sure text round-trips byte for byte, which the audit
// chain's hashes depend on.
func checkEncoding(ctx context.Context, pool *pgxpool.Pool) error {
	var enc string
	if err := pool.QueryRow(ctx, `SHOW server_encoding`).Scan(&enc); err != nil {
		return fmt.Errorf("read server encoding: %w", err)
	}
	if enc != "UTF8" {
		return fmt.Errorf("database encoding is %s, want UTF8", enc)
	}
	return nil
}

// Close commits the writes already queued, then closes the pool. Operations
// started after Close fail with store.ErrClosed. Calling Close again returns
// nil.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := s.gc.Close()
	s.pool.Close()
	if err != nil {
		return fmt.Errorf("postgres: close: %w", err)
	}
	return nil
}
