package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/meshca/meshca/migrations"
)

// MigrationResult says what [Migrate] did.
type MigrationResult struct {
	// Applied lists the versions this call applied, in order; empty when the
	// schema was already current.
	Applied []int64
	// Version is the schema version afterwards.
	Version int64
}

// Migrate applies the pending migrations embedded in the binary (package
// migrations, directory postgres) to the database at dsn. It is what Open
// does first; `meshca migrate` calls it on its own.
//
// Migrations run while this call holds a session-level PostgreSQL advisory
// lock, so any number of processes may call Migrate at once: one applies the
// migrations, the others wait for it and then find nothing to do. Running it
// again is a no-op.
func Migrate(ctx context.Context, dsn string) (MigrationResult, error) {
	r, err := migrate(ctx, dsn)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("postgres: %w", err)
	}
	return r, nil
}

func migrate(ctx context.Context, dsn string) (_ MigrationResult, err error) {
	pcfg, err := pgxpool.ParseConfig(dsn) // accepts the pool_* parameters Open does
	if err != nil {
		return MigrationResult{}, fmt.Errorf("dsn: %w", err)
	}
	db := stdlib.OpenDB(*pcfg.ConnConfig)
	defer db.Close()
	// The lock is held by a connection of its own for the whole run, so it
	// also covers goose's first look at (and creation of) its version table.
	lock, err := lockMigrations(ctx, db)
	if err != nil {
		return MigrationResult{}, err
	}
	defer func() {
		if uerr := lock.unlock(); err == nil && uerr != nil {
			err = uerr
		}
	}()
	fsys, err := fs.Sub(migrations.Postgres, "postgres")
	if err != nil {
		return MigrationResult{}, fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return MigrationResult{}, fmt.Errorf("migrate: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("migrate: %w", err)
	}
	var r MigrationResult
	for _, res := range results {
		r.Applied = append(r.Applied, res.Source.Version)
	}
	if r.Version, err = p.GetDBVersion(ctx); err != nil {
		return MigrationResult{}, fmt.Errorf("migrate: read version: %w", err)
	}
	return r, nil
}

// migrationLockID is the key of the advisory lock migrations run under: the
// bytes "meshcamg". Every process migrating a meshca database takes it.
const migrationLockID int64 = 0x6d65736863616d67

// migrationLock is a held session-level advisory lock and its connection.
type migrationLock struct{ conn *sql.Conn }

// lockMigrations blocks on pg_advisory_lock(migrationLockID) until the lock
// is free or ctx ends, rather than polling for it (as goose's own locker
// does, every few seconds): replicas starting together wait only as long as
// the migration takes.
func lockMigrations(ctx context.Context, db *sql.DB) (*migrationLock, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLockID); err != nil {
		conn.Close()
		return nil, fmt.Errorf("migrate: take lock: %w", err)
	}
	return &migrationLock{conn: conn}, nil
}

// unlock releases the lock and its connection. Closing the connection alone
// would release the lock too; unlocking first makes a lost lock visible.
func (l *migrationLock) unlock() error {
	defer l.conn.Close()
	// Not the caller's ctx: release even if it was canceled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var released bool
	if err := l.conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, migrationLockID).Scan(&released); err != nil {
		return fmt.Errorf("migrate: release lock: %w", err)
	}
	if !released {
		return errors.New("migrate: release lock: not held by this session")
	}
	return nil
}
