package e2e

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshca/meshca/store/postgres/pgtest"
)

// TestAuditCheckpointDetectsTruncation runs meshca dev, issues two
// certificates and stops it, which signs a checkpoint of the audit chain
// into DATA_DIR/audit-checkpoints. Then the last event is deleted as the
// database's owner could, together with the recorded head on PostgreSQL:
// plain `meshca audit verify` still passes, `--checkpoint` (with the public
// key pinned from a copy taken earlier) reports the cut.
func TestAuditCheckpointDetectsTruncation(t *testing.T) {
	for _, tt := range []struct {
		name     string
		setup    func(t *testing.T) (devArgs, verifyArgs []string)
		truncate func(t *testing.T, dataDir string, verifyArgs []string)
	}{
		{"sqlite", func(t *testing.T) ([]string, []string) { return nil, nil },
			func(t *testing.T, dataDir string, _ []string) {
				db, err := sql.Open("sqlite", filepath.Join(dataDir, "meshca.db"))
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				for _, q := range []string{`DROP TRIGGER audit_events_no_delete`, `DELETE FROM audit_events WHERE seq = 2`} {
					if _, err := db.Exec(q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
			}},
		{"postgres", func(t *testing.T) ([]string, []string) {
			dsn := pgtest.NewDatabase(t)
			return []string{"--store-dsn", dsn}, []string{"--store-dsn", dsn}
		}, func(t *testing.T, _ string, verifyArgs []string) {
			dsn := verifyArgs[1]
			pgtest.Exec(t, dsn, `ALTER TABLE audit_events DISABLE TRIGGER USER`)
			pgtest.Exec(t, dsn, `DELETE FROM audit_events WHERE seq = 2`)
			pgtest.Exec(t, dsn, `ALTER TABLE audit_chain_head DISABLE TRIGGER USER`)
			pgtest.Exec(t, dsn, `UPDATE audit_chain_head SET seq = 1, hash = (SELECT hash FROM audit_events WHERE seq = 1)`)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			devArgs, verifyArgs := tt.setup(t)
			dataDir := issueTwo(t, devArgs...)
			if verifyArgs == nil {
				verifyArgs = []string{"--data-dir", dataDir}
			}
			dir := filepath.Join(dataDir, "audit-checkpoints")
			latest := filepath.Join(dir, "latest.json")
			pinned := filepath.Join(t.TempDir(), "checkpoint-key.pub.pem")
			pub, err := os.ReadFile(filepath.Join(dir, "checkpoint-key.pub.pem"))
			if err != nil {
				t.Fatalf("meshca dev wrote no checkpoint public key: %v", err)
			}
			writeFile(t, pinned, string(pub))
			verifyAudit(t, true, "audit chain reaches 1 checkpoint", append(verifyArgs, "--checkpoint", latest, "--checkpoint-key", pinned)...)

			tt.truncate(t, dataDir, verifyArgs)
			verifyAudit(t, true, "audit chain verified: 1 events", verifyArgs...)
			verifyAudit(t, false, "DOES NOT REACH the checkpoint at seq 2: the chain ends at seq 1",
				append(verifyArgs, "--checkpoint", latest, "--checkpoint-key", pinned)...)
		})
	}
}
