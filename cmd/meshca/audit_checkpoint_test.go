package main

import (
	"database/sql"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
	"github.com/meshca/meshca/store/postgres/pgtest"
)

// chainDB is a store's database opened behind its back, as its owner (or
// anyone with the file) could: triggers off, rows rewritten at will.
type chainDB struct {
	db   *sql.DB
	pg   bool
	args []string // the `meshca audit verify` target flags
}

func (c chainDB) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := c.db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// disableTriggers turns the append-only triggers off, which the owner of
// the tables may always do.
func (c chainDB) disableTriggers(t *testing.T) {
	if c.pg {
		c.exec(t, `ALTER TABLE audit_events DISABLE TRIGGER USER`)
		c.exec(t, `ALTER TABLE audit_chain_head DISABLE TRIGGER USER`)
		return
	}
	c.exec(t, `DROP TRIGGER audit_events_no_update`)
	c.exec(t, `DROP TRIGGER audit_events_no_delete`)
}

// truncate deletes every event after seq and, on PostgreSQL, moves the
// recorded head back to match: a tail cut off without a trace in the chain.
func (c chainDB) truncate(t *testing.T, seq int64) {
	c.disableTriggers(t)
	c.exec(t, `DELETE FROM audit_events WHERE seq > $1`, seq)
	if c.pg {
		c.exec(t, `UPDATE audit_chain_head SET seq = $1, hash = (SELECT hash FROM audit_events WHERE seq = $1)`, seq)
	}
}

// rewrite changes the actor of the event at seq and re-hashes the chain
// from there to its end, so that every link checks out again.
func (c chainDB) rewrite(t *testing.T, seq int64, actor string) {
	c.disableTriggers(t)
	c.exec(t, `UPDATE audit_events SET actor = $1 WHERE seq = $2`, actor, seq)
	rows, err := c.db.Query(`SELECT seq, time, actor, action, cluster, spiffe_id, serial, detail, prev_hash FROM audit_events WHERE seq >= $1 ORDER BY seq`, seq)
	if err != nil {
		t.Fatal(err)
	}
	var events []store.AuditEvent
	for rows.Next() {
		var ev store.AuditEvent
		var unix int64
		if err := rows.Scan(&ev.Seq, &unix, &ev.Actor, &ev.Action, &ev.Cluster, &ev.SPIFFEID, &ev.Serial, &ev.Detail, &ev.PrevHash); err != nil {
			t.Fatal(err)
		}
		ev.Time = time.Unix(unix, 0).UTC()
		events = append(events, ev)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	prev := events[0].PrevHash
	for _, ev := range events {
		ev.Hash = store.ChainHash(prev, ev)
		c.exec(t, `UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3`, prev, ev.Hash, ev.Seq)
		prev = ev.Hash
	}
	if c.pg {
		c.exec(t, `UPDATE audit_chain_head SET hash = $1`, prev)
	}
}

// newCheckpointedChain records n issuances in a new store of the given
// backend and lets the checkpointer the issuer and the root run sign its
// head. It returns the database and the checkpoint directory.
func newCheckpointedChain(t *testing.T, backend string, n int) (chainDB, string) {
	t.Helper()
	var cfg storeConfig
	var c chainDB
	dataDir := t.TempDir()
	driver, dsn := "sqlite", filepath.Join(dataDir, "meshca.db")
	if backend == "postgres" {
		dsn = pgtest.NewDatabase(t)
		cfg.DSN, driver, c.pg = dsn, "pgx", true
		c.args = []string{"--store-dsn", dsn}
	} else {
		c.args = []string{"--data-dir", dataDir}
	}
	recordIssuances(t, cfg, dataDir, n)
	db, err := openBackend(t.Context(), cfg, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := checkpoint.Start(db, cfg.Checkpoint.dirConfig(dataDir), "cluster/dev", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if c.db, err = sql.Open(driver, dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.db.Close() })
	return c, filepath.Join(dataDir, "audit-checkpoints")
}

// TestAuditVerifyCheckpointDetectsRewrites performs, on each backend, the
// rewrites a chain cannot show on its own — a cut-off tail, and an edited
// event with the chain re-hashed after it — plus a forged checkpoint, and
// checks that `meshca audit verify --checkpoint` refuses each while plain
// verification is fooled by the first two.
func TestAuditVerifyCheckpointDetectsRewrites(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, tt := range []struct {
			name string
			// attack tampers with the database or the checkpoint directory
			// and returns the checkpoint file to verify against.
			attack    func(t *testing.T, c chainDB, dir string) string
			plainOK   bool
			wantError string
		}{
			{"truncated tail", func(t *testing.T, c chainDB, dir string) string {
				c.truncate(t, 3)
				return filepath.Join(dir, checkpoint.LatestFile)
			}, true, "DOES NOT REACH the checkpoint at seq 5: the chain ends at seq 3"},
			{"rewritten and re-hashed", func(t *testing.T, c chainDB, dir string) string {
				c.rewrite(t, 2, "admin:mallory")
				return filepath.Join(dir, checkpoint.LatestFile)
			}, true, "DOES NOT REACH the checkpoint at seq 5: the event at seq 5 has hash"},
			{"edited head", func(t *testing.T, c chainDB, dir string) string {
				c.rewrite(t, 5, "admin:mallory")
				return filepath.Join(dir, checkpoint.LatestFile)
			}, true, "DOES NOT REACH the checkpoint at seq 5: the event at seq 5 has hash"},
			{"forged checkpoint after truncation", func(t *testing.T, c chainDB, dir string) string {
				c.truncate(t, 3)
				path := filepath.Join(dir, checkpoint.LatestFile)
				editJSON(t, path, func(m map[string]any) { m["seq"] = 3 })
				return path
			}, true, "invalid signature"},
		} {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				c, dir := newCheckpointedChain(t, backend, 5)
				latest := filepath.Join(dir, checkpoint.LatestFile)
				out, err := runCommand(t, append([]string{"audit", "verify", "--checkpoint", latest}, c.args...)...)
				if err != nil || !strings.Contains(out, "reaches 1 checkpoint") || !strings.Contains(out, "seq 5") {
					t.Fatalf("before the attack: err %v, output %q", err, out)
				}
				cpFile := tt.attack(t, c, dir)
				out, err = runCommand(t, append([]string{"audit", "verify"}, c.args...)...)
				if (err == nil) != tt.plainOK {
					t.Fatalf("plain verify after the attack: err %v, output %q", err, out)
				}
				out, err = runCommand(t, append([]string{"audit", "verify", "--checkpoint", cpFile}, c.args...)...)
				if err == nil || !strings.Contains(out+err.Error(), tt.wantError) {
					t.Fatalf("verify --checkpoint after the attack: err %v, output %q; want %q", err, out, tt.wantError)
				}
			})
		}
	}
}

// TestAuditVerifyCheckpointPinnedKey replaces the checkpoint and the public
// key next to it with ones the attacker signed: verifying against the
// pinned key refuses them.
func TestAuditVerifyCheckpointPinnedKey(t *testing.T) {
	c, dir := newCheckpointedChain(t, "sqlite", 5)
	pinned := filepath.Join(t.TempDir(), "pinned.pub.pem")
	data, err := os.ReadFile(filepath.Join(dir, checkpoint.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pinned, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.truncate(t, 3)
	head := headOf(t, c, 3)
	forger, err := checkpoint.LoadOrCreateKey(filepath.Join(t.TempDir(), "forger.pem"))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := checkpoint.Sign(forger, checkpoint.Checkpoint{Name: "cluster/dev", Head: head})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := checkpoint.EncodePublicKey(forger.Public())
	latest := filepath.Join(dir, checkpoint.LatestFile)
	for path, data := range map[string][]byte{latest: forged, filepath.Join(dir, checkpoint.PublicKeyFile): pub} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runCommand(t, append([]string{"audit", "verify", "--checkpoint", latest, "--checkpoint-key", pinned}, c.args...)...)
	if err == nil || !strings.Contains(err.Error(), "checkpoint refused") || !strings.Contains(err.Error(), "signed by key") {
		t.Fatalf("verify with a forged checkpoint and the pinned key: err %v, output %q", err, out)
	}
}

func headOf(t *testing.T, c chainDB, seq int64) store.ChainHead {
	t.Helper()
	h := store.ChainHead{Seq: seq}
	if err := c.db.QueryRow(`SELECT hash FROM audit_events WHERE seq = $1`, seq).Scan(&h.Hash); err != nil {
		t.Fatal(err)
	}
	return h
}

func editJSON(t *testing.T, path string, f func(map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
