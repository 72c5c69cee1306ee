package e2e

import (
	"context"
	"database/sql"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/meshca/meshca/store/postgres/pgtest"
)

// TestMigrateTwoProcessesAtOnce starts two `meshca migrate` processes on an
// empty PostgreSQL database at the same time: both succeed, one applies the
// schema and the other finds it current; a third run changes nothing.
func TestMigrateTwoProcessesAtOnce(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var cmds [2]*exec.Cmd
	var outs [2]strings.Builder
	for i := range cmds {
		cmds[i] = exec.CommandContext(ctx, meshcaBin, "migrate", "--store-dsn", dsn)
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	migrated := 0
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("meshca migrate %d: %v\n%s", i, err, outs[i].String())
		}
		out := outs[i].String()
		switch {
		case strings.Contains(out, "schema migrated to version"):
			migrated++
		case strings.Contains(out, "schema is current"):
		default:
			t.Fatalf("meshca migrate %d printed %q", i, out)
		}
	}
	if migrated != 1 {
		t.Fatalf("%d of the two concurrent runs applied migrations, want exactly 1", migrated)
	}
	r := runMeshca(t, "", "migrate", "--store-dsn", dsn)
	mustSucceed(t, "meshca migrate (again)", r)
	if !strings.Contains(r.stdout, "schema is current") {
		t.Fatalf("third meshca migrate printed %q, want the schema current", r.stdout)
	}
}

// issueTwo runs meshca dev with extra args, fetches two certificates from it
// and stops it.
func issueTwo(t *testing.T, args ...string) (dataDir string) {
	t.Helper()
	work := t.TempDir()
	srv := startDev(t, devOptions{Dir: work, DataDir: filepath.Join(work, "data"), Args: args})
	_, tokenFile := mintToken(t, work, "token", "--data-dir", srv.DataDir)
	for _, out := range []string{"a", "b"} {
		if r := fetchCert(t, srv, tokenFile, filepath.Join(work, out)); r.code != 0 {
			t.Fatalf("cert fetch: %s\n%s", r, srv.Output())
		}
	}
	srv.Stop(t, syscall.SIGTERM)
	return srv.DataDir
}

// verifyAudit runs `meshca audit verify` with args and checks its outcome.
func verifyAudit(t *testing.T, wantOK bool, wantOut string, args ...string) {
	t.Helper()
	r := runMeshca(t, "", append([]string{"audit", "verify"}, args...)...)
	if (r.code == 0) != wantOK || !strings.Contains(r.stdout, wantOut) {
		t.Fatalf("meshca audit verify: want success=%v and output containing %q, got %s", wantOK, wantOut, r)
	}
}

// TestDevOnPostgresAndAuditVerify runs the dev stack on PostgreSQL
// (`meshca dev --store-dsn postgres://...`), issues two certificates, and
// checks `meshca audit verify --store-dsn` accepts the chain, then reports
// the exact row after one is deleted with SQL.
func TestDevOnPostgresAndAuditVerify(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	issueTwo(t, "--store-dsn", dsn)
	verifyAudit(t, true, "audit chain verified: 2 events", "--store-dsn", dsn)

	pgtest.Exec(t, dsn, `ALTER TABLE audit_events DISABLE TRIGGER USER`)
	pgtest.Exec(t, dsn, `DELETE FROM audit_events WHERE seq = 1`)
	verifyAudit(t, false, "BROKEN at seq 1:", "--store-dsn", dsn)
}

// TestAuditVerifySQLite does the same on the default SQLite store with
// `meshca audit verify --data-dir`.
func TestAuditVerifySQLite(t *testing.T) {
	dataDir := issueTwo(t)
	verifyAudit(t, true, "audit chain verified: 2 events", "--data-dir", dataDir)

	db, err := sql.Open("sqlite", filepath.Join(dataDir, "meshca.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{`DROP TRIGGER audit_events_no_update`, `UPDATE audit_events SET detail = 'x' WHERE seq = 2`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	verifyAudit(t, false, "BROKEN at seq 2:", "--data-dir", dataDir)
}
