package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/storetest"
)

// rawConn connects to dsn behind the store's back.
func rawConn(tb testing.TB, dsn string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestAuditLogIsAppendOnly(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, Config{DSN: dsn})
	storetest.Seed(t, s, 2)
	conn := rawConn(t, dsn)
	for _, q := range []string{
		`UPDATE audit_events SET detail = 'x' WHERE seq = 1`,
		`DELETE FROM audit_events WHERE seq = 2`,
		`TRUNCATE audit_events`,
		`DELETE FROM audit_chain_head`,
		`UPDATE audit_chain_head SET seq = 1`,
	} {
		_, err := conn.Exec(t.Context(), q)
		if err == nil || !(strings.Contains(err.Error(), "append-only") || strings.Contains(err.Error(), "cannot move back")) {
			t.Errorf("%s: err = %v, want a trigger to refuse", q, err)
		}
	}
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatalf("VerifyAuditChain: %v", err)
	}
}

// rehash recomputes the hash of the row at seq after it was changed, as a
// careful attacker would; the break then shows at the next row.
func rehash(t *testing.T, conn *pgx.Conn, seq int64) {
	t.Helper()
	row := conn.QueryRow(t.Context(), `SELECT `+sqlq.EventColumns+` FROM audit_events WHERE seq = $1`, seq)
	ev, err := sqlq.ScanEvent(row)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, `UPDATE audit_events SET hash = $1 WHERE seq = $2`, store.ChainHash(ev.PrevHash, ev), seq)
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// appendForged appends a correctly linked event after the last one, without
// advancing audit_chain_head.
func appendForged(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var last store.ChainHead
	if err := conn.QueryRow(t.Context(), `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).
		Scan(&last.Seq, &last.Hash); err != nil {
		t.Fatal(err)
	}
	ev := last.Next(store.AuditEvent{Time: storetest.T0, Actor: "mallory", Action: "certificate.issue", Serial: "f0"})
	mustExec(t, conn, `INSERT INTO audit_events (`+sqlq.EventColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		ev.Seq, ev.Time.Unix(), ev.Actor, ev.Action, ev.Cluster, ev.SPIFFEID, ev.Serial, ev.Detail, ev.PrevHash, ev.Hash)
}

// TestTamperingBreaksChain changes, deletes, reorders and adds audit rows
// with SQL, as someone with superuser access could, and checks the chain
// breaks at exactly that row.
func TestTamperingBreaksChain(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(t *testing.T, conn *pgx.Conn)
		wantSeq int64
	}{
		{"changed detail", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `UPDATE audit_events SET detail = 'ttl=24h' WHERE seq = 3`)
		}, 3},
		{"changed serial", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `UPDATE audit_events SET serial = 'ffff' WHERE seq = 5`)
		}, 5},
		{"changed time", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `UPDATE audit_events SET time = time - 3600 WHERE seq = 4`)
		}, 4},
		{"changed and re-hashed", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3`)
			rehash(t, c, 3)
		}, 4},
		{"deleted row", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `DELETE FROM audit_events WHERE seq = 3`)
		}, 3},
		{"deleted last row", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `DELETE FROM audit_events WHERE seq = 6`)
		}, 6},
		{"swapped contents", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `UPDATE audit_events AS a SET time = b.time, actor = b.actor, action = b.action,
				cluster = b.cluster, spiffe_id = b.spiffe_id, serial = b.serial, detail = b.detail,
				prev_hash = b.prev_hash, hash = b.hash
				FROM audit_events AS b WHERE (a.seq, b.seq) IN ((2, 4), (4, 2))`)
		}, 2},
		{"reordered seq", func(t *testing.T, c *pgx.Conn) {
			mustExec(t, c, `UPDATE audit_events SET seq = 1000 WHERE seq = 2`)
			mustExec(t, c, `UPDATE audit_events SET seq = 2 WHERE seq = 4`)
			mustExec(t, c, `UPDATE audit_events SET seq = 4 WHERE seq = 1000`)
		}, 2},
		{"forged event appended", func(t *testing.T, c *pgx.Conn) { appendForged(t, c) }, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			s := openTest(t, Config{DSN: dsn, MaxConns: 2})
			storetest.Seed(t, s, 6)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyAuditLog(t.Context(), dsn); err != nil {
				t.Fatalf("VerifyAuditLog before tampering: %v", err)
			}
			conn := rawConn(t, dsn)
			// A superuser can switch the guard rails off; the chain is what
			// still catches them.
			mustExec(t, conn, `ALTER TABLE audit_events DISABLE TRIGGER USER`)
			tt.tamper(t, conn)

			_, err := VerifyAuditLog(t.Context(), dsn)
			var broken *store.BrokenLinkError
			if !errors.As(err, &broken) {
				t.Fatalf("VerifyAuditLog = %v, want a *store.BrokenLinkError", err)
			}
			if broken.Seq != tt.wantSeq {
				t.Fatalf("chain broken at seq %d (%s), want %d", broken.Seq, broken.Reason, tt.wantSeq)
			}
		})
	}
}
