package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres/pgtest"
)

// runCommand runs the meshca command line in-process and returns its
// standard output and error.
func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newCLI()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// recordIssuances opens the store cfg selects and records n issuances.
func recordIssuances(t *testing.T, cfg storeConfig, dataDir string, n int) {
	t.Helper()
	s, err := openBackend(t.Context(), cfg, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		c := store.Certificate{Serial: fmt.Sprintf("%x", 0xc0+i), SPIFFEID: "spiffe://cluster.local/ns/a/sa/b",
			Cluster: "dev", NotBefore: now, NotAfter: now.Add(time.Hour), Fingerprint: "ff"}
		ev := store.AuditEvent{Actor: "system:serviceaccount:a:b", Action: "certificate.issue", Serial: c.Serial}
		if err := s.RecordIssuance(t.Context(), c, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAuditVerifyCommand runs `meshca audit verify` on a good chain, then on
// one whose row 3 was changed behind the store's back, for both backends.
func TestAuditVerifyCommand(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T) (args []string, tamper func(t *testing.T))
	}{
		{"postgres", func(t *testing.T) ([]string, func(*testing.T)) {
			dsn := pgtest.NewDatabase(t)
			recordIssuances(t, storeConfig{DSN: dsn}, "", 5)
			return []string{"--store-dsn", dsn}, func(t *testing.T) {
				pgtest.Exec(t, dsn, `ALTER TABLE audit_events DISABLE TRIGGER USER`)
				pgtest.Exec(t, dsn, `UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 3`)
			}
		}},
		{"sqlite", func(t *testing.T) ([]string, func(*testing.T)) {
			dir := t.TempDir()
			recordIssuances(t, storeConfig{}, dir, 5)
			return []string{"--data-dir", dir}, func(t *testing.T) {
				db, err := sql.Open("sqlite", filepath.Join(dir, "meshca.db"))
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				for _, q := range []string{`DROP TRIGGER audit_events_no_update`,
					`UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 3`} {
					if _, err := db.Exec(q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args, tamper := tt.setup(t)
			out, err := runCommand(t, append([]string{"audit", "verify"}, args...)...)
			if err != nil || !strings.Contains(out, "audit chain verified: 5 events") {
				t.Fatalf("audit verify on a good chain: err %v, output %q", err, out)
			}
			tamper(t)
			out, err = runCommand(t, append([]string{"audit", "verify"}, args...)...)
			if err == nil {
				t.Fatalf("audit verify succeeded on a tampered chain: %q", out)
			}
			if !strings.Contains(out, "BROKEN at seq 3:") || !strings.Contains(err.Error(), "seq 3") {
				t.Fatalf("audit verify: err %v, output %q; want the break at seq 3", err, out)
			}
		})
	}
}

func TestAuditVerifyMissingDatabase(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCommand(t, "audit", "verify", "--data-dir", dir); err == nil {
		t.Fatal("audit verify on a directory without a database succeeded")
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*")); len(matches) != 0 {
		t.Fatalf("audit verify created %v", matches)
	}
}

func TestMigrateCommand(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	out, err := runCommand(t, "migrate", "--store-dsn", dsn)
	if err != nil || !strings.Contains(out, "schema migrated to version") {
		t.Fatalf("first migrate: err %v, output %q", err, out)
	}
	out, err = runCommand(t, "migrate", "--store-dsn", dsn)
	if err != nil || !strings.Contains(out, "schema is current (version") {
		t.Fatalf("second migrate: err %v, output %q", err, out)
	}
	dir := t.TempDir()
	if out, err := runCommand(t, "migrate", "--data-dir", dir); err != nil || !strings.Contains(out, "is current") {
		t.Fatalf("migrate --data-dir: err %v, output %q", err, out)
	}
	if _, err := runCommand(t, "migrate"); err == nil {
		t.Fatal("migrate without a target succeeded")
	}
}

// TestMigrateGrantTo migrates as a non-superuser owner with --grant-to a
// non-superuser runtime role, then checks that the role can record
// issuances but cannot disable the audit log's triggers or delete from it.
func TestMigrateGrantTo(t *testing.T) {
	admin := pgtest.AdminDSN(t)
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	owner, runtime := "meshca_test_owner_"+suffix, "meshca_test_runtime_"+suffix
	for _, r := range []string{owner, runtime} {
		pgtest.Exec(t, admin, `CREATE ROLE `+r+` LOGIN NOSUPERUSER`)
		t.Cleanup(func() { pgtest.Exec(t, admin, `DROP ROLE IF EXISTS `+r) })
	}
	dsn := pgtest.CreateDatabase(t, admin)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, admin, `ALTER DATABASE `+strings.TrimPrefix(u.Path, "/")+` OWNER TO `+owner)
	as := func(user string) string { v := *u; v.User = url.User(user); return v.String() }
	if _, err := runCommand(t, "migrate", "--store-dsn", as(owner), "--grant-to", "postgres"); err == nil || !strings.Contains(err.Error(), "superuser") {
		t.Fatalf("migrate --grant-to postgres: err %v, want a refusal", err)
	}
	out, err := runCommand(t, "migrate", "--store-dsn", as(owner), "--grant-to", runtime)
	if err != nil || !strings.Contains(out, "granted runtime role "+runtime) {
		t.Fatalf("migrate --grant-to: err %v, output %q", err, out)
	}
	recordIssuances(t, storeConfig{DSN: as(runtime)}, "", 2)
	for _, q := range []string{`ALTER TABLE audit_events DISABLE TRIGGER USER`, `DELETE FROM audit_events`} {
		if err := execAs(t, as(runtime), q); err == nil || !strings.Contains(err.Error(), "SQLSTATE 42501") {
			t.Errorf("%s as the runtime role: err %v, want insufficient_privilege", q, err)
		}
	}
	if out, err := runCommand(t, "audit", "verify", "--store-dsn", as(runtime)); err != nil || !strings.Contains(out, "2 events") {
		t.Fatalf("audit verify as the runtime role: err %v, output %q", err, out)
	}
}

func execAs(t *testing.T, dsn, q string) error {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.Exec(q)
	return err
}
