package postgres

import (
	"context"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/meshca/meshca/migrations"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/storetest"
)

var wantTables = []string{"audit_chain_head", "audit_events", "certificates", "cluster_credentials", "clusters", "intermediates",
	"issuer_crls", "join_tokens", "jwt_authorities", "revocations", "root_crls", "roots", "standalone_roots"}

// tables lists the public schema's tables, leaving out goose's.
func tables(t *testing.T, dsn string) []string {
	t.Helper()
	rows, err := rawConn(t, dsn).Query(t.Context(), `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name <> 'goose_db_version' ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// latestVersion returns the highest migration version and how many
// migrations there are (versions may have gaps).
func latestVersion(t *testing.T) (int64, int) {
	t.Helper()
	entries, err := fs.Glob(migrations.Postgres, "postgres/*.sql")
	if err != nil || len(entries) == 0 {
		t.Fatalf("embedded migrations: %v, %v", entries, err)
	}
	var latest int64
	for _, e := range entries {
		n, err := strconv.ParseInt(strings.SplitN(path.Base(e), "_", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("migration %s: %v", e, err)
		}
		latest = max(latest, n)
	}
	return latest, len(entries)
}

func TestMigrateFromEmptyThenIdempotent(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	if got := tables(t, dsn); len(got) != 0 {
		t.Fatalf("new database has tables %v", got)
	}
	latest, count := latestVersion(t)
	r, err := Migrate(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if len(r.Applied) != count || r.Version != latest {
		t.Fatalf("Migrate = %+v, want all %d migrations applied, version %d", r, count, latest)
	}
	if got := tables(t, dsn); !slices.Equal(got, wantTables) {
		t.Fatalf("tables %v, want %v", got, wantTables)
	}
	for range 2 {
		r, err = Migrate(t.Context(), dsn)
		if err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
		if len(r.Applied) != 0 || r.Version != latest {
			t.Fatalf("Migrate again = %+v, want nothing applied, version %d", r, latest)
		}
	}
	// The store opens on the migrated database and works.
	s := openTest(t, Config{DSN: dsn})
	storetest.Seed(t, s, 2)
}

// Several processes (here: sessions) migrating an empty database at once:
// exactly one applies each migration, all succeed, and the store works.
func TestMigrateConcurrently(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const n = 4
	results := make([]MigrationResult, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = Migrate(context.Background(), dsn)
		})
	}
	close(start)
	wg.Wait()
	latest, count := latestVersion(t)
	applied := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Migrate %d: %v", i, errs[i])
		}
		if results[i].Version != latest {
			t.Errorf("Migrate %d: version %d, want %d", i, results[i].Version, latest)
		}
		applied += len(results[i].Applied)
	}
	if applied != count {
		t.Fatalf("%d migrations applied in total by %d concurrent runs, want %d", applied, n, count)
	}
	var rows int
	if err := rawConn(t, dsn).QueryRow(t.Context(), `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != count {
		t.Fatalf("goose_db_version has %d applied rows, want %d", rows, count)
	}
}

// TestMigrationsUpDownUp applies every migration, rolls all back and applies
// them again, so a broken Down section fails here and not in an operator's
// rollback.
func TestMigrationsUpDownUp(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db := stdlib.OpenDB(*mustParse(t, dsn))
	t.Cleanup(func() { db.Close() })
	fsys, err := fs.Sub(migrations.Postgres, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got := tables(t, dsn); len(got) != 0 {
		t.Fatalf("after down: tables %v remain", got)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if got := tables(t, dsn); !slices.Equal(got, wantTables) {
		t.Fatalf("after second up: tables %v, want %v", got, wantTables)
	}
}

func mustParse(t *testing.T, dsn string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
