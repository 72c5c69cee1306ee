package migrations_test

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"

	"github.com/meshca/meshca/migrations"
	"github.com/meshca/meshca/store/postgres/pgtest"
)

// TestStepDownUp rolls the schema back from the newest version to each
// earlier one and forward again, on both dialects, and checks that every
// version's schema is the same whether it was reached going up or coming
// down: what an operator does when rolling an upgrade back with
// `goose down-to` and then upgrading again with `meshca migrate`.
func TestStepDownUp(t *testing.T) {
	for _, d := range []struct {
		name    string
		dialect goose.Dialect
		fsys    fs.FS
		open    func(t *testing.T) *sql.DB
		schema  func(t *testing.T, db *sql.DB) []string
	}{
		{"sqlite", goose.DialectSQLite3, migrations.SQLite, openSQLite, sqliteSchema},
		{"postgres", goose.DialectPostgres, migrations.Postgres, openPostgres, postgresSchema},
	} {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			db := d.open(t)
			fsys, err := fs.Sub(d.fsys, d.name)
			if err != nil {
				t.Fatal(err)
			}
			p, err := goose.NewProvider(d.dialect, db, fsys, goose.WithDisableGlobalRegistry(true))
			if err != nil {
				t.Fatalf("new provider: %v", err)
			}
			var versions []int64
			for _, s := range p.ListSources() {
				versions = append(versions, s.Version)
			}
			if len(versions) < 2 {
				t.Fatalf("embedded migrations %v: want at least two", versions)
			}
			// The schema at each version, reached going up one at a time.
			want := map[int64][]string{0: d.schema(t, db)}
			for _, v := range versions {
				if _, err := p.UpTo(ctx, v); err != nil {
					t.Fatalf("up to %d: %v", v, err)
				}
				want[v] = d.schema(t, db)
			}
			latest := versions[len(versions)-1]
			for _, v := range append([]int64{0}, versions[:len(versions)-1]...) {
				if _, err := p.DownTo(ctx, v); err != nil {
					t.Fatalf("down from %d to %d: %v", latest, v, err)
				}
				if got, err := p.GetDBVersion(ctx); err != nil || got != v {
					t.Fatalf("after down to %d: version %d, %v", v, got, err)
				}
				if got := d.schema(t, db); !slices.Equal(got, want[v]) {
					t.Fatalf("schema after down to %d differs from the schema going up:\n got %v\nwant %v", v, got, want[v])
				}
				if _, err := p.Up(ctx); err != nil {
					t.Fatalf("up from %d: %v", v, err)
				}
				if got := d.schema(t, db); !slices.Equal(got, want[latest]) {
					t.Fatalf("schema after down to %d and up again differs:\n got %v\nwant %v", v, got, want[latest])
				}
			}
		})
	}
}

func openSQLite(t *testing.T) *sql.DB {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openPostgres(t *testing.T) *sql.DB {
	dsn := pgtest.NewDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// sqliteSchema lists the SQL of every table, index and trigger, leaving out
// goose's and SQLite's own.
func sqliteSchema(t *testing.T, db *sql.DB) []string {
	return query(t, db, `SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_schema
		WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE 'goose_%' ORDER BY type, name`)
}

// postgresSchema lists the columns, constraints, indexes, functions and
// triggers of the public schema, leaving out goose's table.
func postgresSchema(t *testing.T, db *sql.DB) []string {
	var s []string
	s = append(s, query(t, db, `SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || COALESCE(column_default, '')
		FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE 'goose_%'`)...)
	s = append(s, query(t, db, `SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
		FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text NOT LIKE 'goose_%'`)...)
	s = append(s, query(t, db, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE 'goose_%'`)...)
	s = append(s, query(t, db, `SELECT 'function ' || proname || ' ' || md5(prosrc) FROM pg_proc WHERE pronamespace = 'public'::regnamespace`)...)
	s = append(s, query(t, db, `SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal`)...)
	slices.Sort(s)
	return s
}

func query(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", strings.Fields(q)[1], err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
