package migrations_test

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite"

	"github.com/meshca/meshca/migrations"
)

// TestSQLiteUpDownUp applies every migration, rolls all of them back and
// applies them again, so a broken Down section fails here rather than in an
// operator's rollback.
func TestSQLiteUpDownUp(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	fsys, err := fs.Sub(migrations.SQLite, "sqlite")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys)
	if err != nil {
		t.Fatalf("new provider: %v", err)
	}
	if len(p.ListSources()) == 0 {
		t.Fatal("no embedded migrations")
	}
	wantTables := []string{"audit_events", "certificates", "cluster_credentials", "clusters", "intermediates", "issuer_crls", "join_tokens", "jwt_authorities", "revocations", "root_crls", "roots", "standalone_roots"}

	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	if got := tables(t, db); !slices.Equal(got, wantTables) {
		t.Fatalf("after up: tables %v, want %v", got, wantTables)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got := tables(t, db); len(got) != 0 {
		t.Fatalf("after down: tables %v remain", got)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if got := tables(t, db); !slices.Equal(got, wantTables) {
		t.Fatalf("after second up: tables %v, want %v", got, wantTables)
	}
}

// tables lists the schema's tables, leaving out goose's and SQLite's own.
func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_schema WHERE type = 'table'
		AND name NOT LIKE 'sqlite_%' AND name <> 'goose_db_version' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}
