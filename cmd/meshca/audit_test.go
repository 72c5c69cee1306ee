package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
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
	cmd := newRootCommand()
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
	cfg.Retention.Disabled = true
	s, err := openStore(t.Context(), cfg, dataDir)
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
