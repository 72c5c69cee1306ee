// Package sqlite is the embedded store: one SQLite file, pure Go
// (modernc.org/sqlite), for `meshca dev` and small single-node installs.
//
// Durability: the database runs in WAL mode with synchronous=FULL, so a write
// method returns only after its transaction is on disk. All writes go through
// one connection owned by a [store.GroupCommitter]: concurrent writes share a
// transaction (and an fsync), and the audit hash chain is extended inside
// that transaction, after reading the current head, so seq numbers are
// gapless and links never race. The rare writes of the root service and of
// revocation (the [store.RootStore] and [store.RevocationStore] methods)
// skip the batching: each runs a transaction of
// its own on that same connection, between batches, and extends the chain
// the same way. Reads use a separate pool of read-only connections, which
// WAL lets run alongside the writer.
//
// Batches: under load, the writer waits up to DefaultCommitWait for a batch
// to fill, because every commit costs an fsync.
//
// One bad write cannot fail the others in its batch: each write runs under its
// own SAVEPOINT, and a write that fails (a duplicate serial, say) is rolled
// back to it and answered with its error while the rest of the batch commits.
// Only a failure of the transaction itself (BEGIN, reading the chain head,
// COMMIT) fails the whole batch, and then nothing of it is visible.
//
// Times are stored as integer Unix seconds, UTC.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/meshca/meshca/migrations"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// Config configures Open.
type Config struct {
	// Path is the database file. It is created with mode 0600 if it does not
	// exist; an existing file keeps its mode. SQLite creates Path+"-wal" and
	// Path+"-shm" beside it with the same mode. Required; must not contain '?'.
	Path string
	// Now is the store's clock, used for created_at and for audit events
	// without a Time. Nil means time.Now. It exists so that a service
	// under test on a fixed or moved clock (served over real TLS, so not
	// in a synctest bubble) stamps its rows on that same clock: audit
	// order and "active now" queries compare the two.
	Now func() time.Time
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection (another process, or the writer during a checkpoint) before
	// failing. Zero means 5s.
	BusyTimeout time.Duration
	// MaxReaders caps the read-only connections. Zero means 4.
	MaxReaders int
	// GroupCommit tunes write batching; the zero value batches up to 256
	// writes and, under load, waits up to DefaultCommitWait for a batch to
	// fill (MaxWait zero means DefaultCommitWait here). MaxBatch 1 commits
	// every write on its own.
	GroupCommit store.GroupCommitConfig
}

// defaultCommitWait is how long, under load, the writer waits for more
// writes before committing a batch. A commit costs about the same CPU
// whatever its size (the fsync, the WAL header, the transaction), and
// without the wait batches under load average under two writes; with it
// they hold twenty to thirty, and issuance through gRPC with SQLite takes
// about a third less time per certificate (docs/benchmarks.md, issuance section). A lightly loaded store
// never waits (see store.GroupCommitConfig.MaxWait).
const defaultCommitWait = 5 * time.Millisecond

// walAutocheckpoint lets the WAL grow to 4000 pages (16 MiB) before the
// writer copies it back into the database: index pages that many batches
// touch are then copied once per checkpoint instead of once per 1000 pages
// (SQLite's default), for a bounded WAL.
const walAutocheckpoint = "wal_autocheckpoint(4000)"

// Validate reports whether c can be used by Open.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("empty path")
	case strings.Contains(c.Path, "?"):
		return fmt.Errorf("path %q contains '?'", c.Path)
	case c.BusyTimeout < 0:
		return fmt.Errorf("negative busy timeout %v", c.BusyTimeout)
	case c.MaxReaders < 0:
		return fmt.Errorf("negative max readers %d", c.MaxReaders)
	}
	return c.GroupCommit.Validate()
}

// Store is the SQLite implementation of [store.Store],
// [store.RootStore] and [store.RevocationStore]. It is safe for concurrent
// use.
type Store struct {
	// Reads serves the plain reads from the read-only connections, Writes
	// the administrative writes through writeTx.
	sqlq.Reads
	sqlq.Writes
	now    func() time.Time
	path   string  // absolute path of the database file
	w      *sql.DB // exactly one connection, for every write
	r      *sql.DB // read-only connections
	stmts  writeStmts
	gc     *store.GroupCommitter[write]
	closed atomic.Bool
	// direct is held shared by each write that runs its own transaction
	// or statement instead of going through gc (see writeTx, writeDirect),
	// and exclusively by Close, so that Close waits for those writes before
	// closing the database.
	direct sync.RWMutex
}

var (
	_ store.Store               = (*Store)(nil)
	_ store.StandaloneRootStore = (*Store)(nil)
)

// Open opens (creating if needed) the database at cfg.Path, applies pending
// migrations and starts the writer. The caller must Close the Store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s, err := open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	return s, nil
}

func open(ctx context.Context, cfg Config) (_ *Store, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BusyTimeout == 0 {
		cfg.BusyTimeout = 5 * time.Second
	}
	if cfg.MaxReaders == 0 {
		cfg.MaxReaders = 4
	}
	path, err := filepath.Abs(cfg.Path) // never read as a "file:" URI
	if err != nil {
		return nil, err
	}
	if err := createFile(path); err != nil {
		return nil, err
	}
	busy := strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10)
	writerDSN := dsn(path, url.Values{
		"_txlock": {"immediate"}, // take the write lock at BEGIN, not mid-transaction
		"_pragma": {"busy_timeout(" + busy + ")", "journal_mode(WAL)", "synchronous(FULL)", walAutocheckpoint, "foreign_keys(1)"},
	})
	readerDSN := dsn(path, url.Values{
		"_pragma": {"busy_timeout(" + busy + ")", "foreign_keys(1)", "query_only(1)"},
	})

	if err := migrate(ctx, writerDSN); err != nil {
		return nil, err
	}

	s := &Store{now: cfg.Now, path: path}
	defer func() {
		if err != nil {
			s.closeDBs()
		}
	}()
	if s.w, err = sql.Open("sqlite", writerDSN); err != nil {
		return nil, err
	}
	// One connection that never expires: every write and every chain head
	// read happens on it, so no two transactions ever extend the chain at
	// once (database/sql hands it to one transaction at a time).
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.w.PingContext(ctx); err != nil {
		return nil, err
	}
	if s.r, err = sql.Open("sqlite", readerDSN); err != nil {
		return nil, err
	}
	s.r.SetMaxOpenConns(cfg.MaxReaders)
	s.r.SetMaxIdleConns(cfg.MaxReaders)
	s.Writes = sqlq.Writes{Backend: "sqlite", Ph: sqlq.Question, Now: cfg.Now, Tx: s.tx,
		Flag: boolInt, KeepCertificatesRevoked: keepCertificatesRevoked,
		Direct: s.writeDirect, Prune: on{s.w}, Closed: &s.closed}
	s.Reads = sqlq.Reads{Backend: "sqlite", DB: on{s.r}, Ph: sqlq.Question, ClusterOrder: "name", Closed: &s.closed}
	if err := s.stmts.prepare(ctx, s.w); err != nil {
		return nil, err
	}
	if cfg.GroupCommit.MaxWait == 0 {
		cfg.GroupCommit.MaxWait = defaultCommitWait
	}
	s.gc = store.NewGroupCommitter(cfg.GroupCommit, s.commitBatch)
	return s, nil
}

// writeDirect runs fn on the writer connection, which the group-commit
// batches and writeTx also take one at a time, unless the Store is closed;
// Close waits for it.
func (s *Store) writeDirect(fn func(sqlq.Querier) error) error {
	s.direct.RLock()
	defer s.direct.RUnlock()
	if s.closed.Load() {
		return store.ErrClosed
	}
	return fn(on{s.w})
}

// createFile creates path with mode 0600 unless it exists, so the database
// is never readable by others, not even for a moment.
func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// dsn builds a modernc.org/sqlite data source name: the file path, then the
// driver's query parameters.
func dsn(path string, q url.Values) string {
	return path + "?" + q.Encode()
}

// migrate applies pending migrations on a connection pool of its own: goose
// holds one connection while running statements on others, which the
// writer's single-connection pool cannot serve.
func migrate(ctx context.Context, dsn string) error {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	fsys, err := fs.Sub(migrations.SQLite, "sqlite")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return db.Close()
}

// Close commits the writes already queued, then closes the database.
// Operations started after Close fail with store.ErrClosed. Calling Close
// again returns nil.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	// Direct writes that started before closed was set finish first; those
	// that wait for the lock then see closed.
	s.direct.Lock()
	defer s.direct.Unlock()
	err := s.gc.Close()
	if cerr := s.closeDBs(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

func (s *Store) closeDBs() error {
	var errs []error
	errs = append(errs, s.stmts.close())
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	return errors.Join(errs...)
}
