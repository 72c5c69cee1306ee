package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/storetest"
	"github.com/meshca/meshca/test/benchcpu"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestRootStoreConformance(t *testing.T) {
	storetest.RunRootStore(t, func(t *testing.T) storetest.RootStoreUnderTest {
		s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestRevocationStoreConformance(t *testing.T) {
	storetest.RunRevocationStore(t, func(t *testing.T) storetest.RevocationStoreUnderTest {
		s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

// openTest opens a store at path and closes it at the end of the test.
func openTest(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestReopenKeepsDataAndContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Seed(t, s, 3)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openTest(t, Config{Path: path})
	if _, err := s.Certificate(t.Context(), "s2"); err != nil {
		t.Fatalf("Certificate after reopen: %v", err)
	}
	for _, serial := range []string{"s4", "s5"} {
		if err := s.RecordIssuance(t.Context(), storetest.Cert(serial), storetest.Event(serial)); err != nil {
			t.Fatalf("RecordIssuance after reopen: %v", err)
		}
	}
	events, err := s.AuditEvents(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 5 || events[4].Seq != 5 {
		t.Fatalf("got %d events (last seq %d), want 5", len(events), events[len(events)-1].Seq)
	}
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatalf("VerifyAuditChain after reopen: %v", err)
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s := openTest(t, Config{Path: path})
	storetest.Seed(t, s, 1) // makes sure the WAL exists
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), mode)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"empty path", Config{}},
		{"question mark", Config{Path: filepath.Join(dir, "a?b.db")}},
		{"negative busy timeout", Config{Path: filepath.Join(dir, "x.db"), BusyTimeout: -time.Second}},
		{"negative readers", Config{Path: filepath.Join(dir, "x.db"), MaxReaders: -1}},
		{"negative batch", Config{Path: filepath.Join(dir, "x.db"), GroupCommit: store.GroupCommitConfig{MaxBatch: -1}}},
		{"negative wait", Config{Path: filepath.Join(dir, "x.db"), GroupCommit: store.GroupCommitConfig{MaxWait: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err == nil {
				t.Fatal("Validate = nil")
			}
			if s, err := Open(t.Context(), tt.cfg); err == nil {
				s.Close()
				t.Fatal("Open succeeded with an invalid config")
			}
		})
	}
	if err := (Config{Path: filepath.Join(dir, "ok.db")}).Validate(); err != nil {
		t.Fatalf("Validate(minimal config) = %v", err)
	}
}

func TestInjectedClock(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	s := openTest(t, Config{Path: filepath.Join(t.TempDir(), "meshca.db"), Now: func() time.Time { return now }})
	if err := s.AppendAudit(t.Context(), store.AuditEvent{Actor: "admin:x", Action: "bundle.publish"}); err != nil {
		t.Fatal(err)
	}
	events, err := s.AuditEvents(t.Context(), time.Time{})
	if err != nil || len(events) != 1 {
		t.Fatalf("AuditEvents = %v, %v", events, err)
	}
	if want := now.Truncate(time.Second); !events[0].Time.Equal(want) {
		t.Fatalf("event time %v, want the injected clock's %v", events[0].Time, want)
	}
}

// rawDB opens the database file directly, as someone with access to the file
// would, bypassing the store.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestAuditLogIsAppendOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s := openTest(t, Config{Path: path})
	storetest.Seed(t, s, 2)
	db := rawDB(t, path)
	for _, q := range []string{
		`UPDATE audit_events SET detail = 'x' WHERE seq = 1`,
		`DELETE FROM audit_events WHERE seq = 2`,
	} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only trigger to refuse", q, err)
		}
	}
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatalf("VerifyAuditChain: %v", err)
	}
}

// swapRows exchanges everything but seq between two audit rows.
func swapRows(t *testing.T, db *sql.DB, a, b int64) {
	t.Helper()
	const cols = `time, actor, action, cluster, spiffe_id, serial, detail, prev_hash, hash`
	read := func(seq int64) []any {
		vals := make([]any, 9)
		ptrs := make([]any, 9)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := db.QueryRow(`SELECT `+cols+` FROM audit_events WHERE seq = ?`, seq).Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		return vals
	}
	va, vb := read(a), read(b)
	set := `UPDATE audit_events SET time = ?, actor = ?, action = ?, cluster = ?, spiffe_id = ?,
		serial = ?, detail = ?, prev_hash = ?, hash = ? WHERE seq = ?`
	exec(t, db, set, append(vb, a)...)
	exec(t, db, set, append(va, b)...)
}

func TestTamperingBreaksChain(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(t *testing.T, db *sql.DB)
		wantSeq int64
	}{
		{
			name: "updated detail",
			tamper: func(t *testing.T, db *sql.DB) {
				exec(t, db, `UPDATE audit_events SET detail = 'ttl=24h' WHERE seq = 3`)
			},
			wantSeq: 3,
		},
		{
			name:    "updated serial of a certificate's event",
			tamper:  func(t *testing.T, db *sql.DB) { exec(t, db, `UPDATE audit_events SET serial = 'ffff' WHERE seq = 5`) },
			wantSeq: 5,
		},
		{
			name:    "deleted row",
			tamper:  func(t *testing.T, db *sql.DB) { exec(t, db, `DELETE FROM audit_events WHERE seq = 3`) },
			wantSeq: 3,
		},
		{
			name:    "swapped rows",
			tamper:  func(t *testing.T, db *sql.DB) { swapRows(t, db, 2, 4) },
			wantSeq: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "meshca.db")
			s, err := Open(t.Context(), Config{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			storetest.Seed(t, s, 6)
			if err := s.VerifyAuditChain(t.Context()); err != nil {
				t.Fatalf("VerifyAuditChain before tampering: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			db := rawDB(t, path)
			// Someone with the file can drop the guard rails; the chain is
			// what still catches them.
			exec(t, db, `DROP TRIGGER audit_events_no_update`)
			exec(t, db, `DROP TRIGGER audit_events_no_delete`)
			tt.tamper(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			s = openTest(t, Config{Path: path})
			err = s.VerifyAuditChain(t.Context())
			var broken *store.BrokenLinkError
			if !errors.As(err, &broken) {
				t.Fatalf("VerifyAuditChain = %v, want a *store.BrokenLinkError", err)
			}
			if broken.Seq != tt.wantSeq {
				t.Fatalf("chain broken at seq %d (%s), want %d", broken.Seq, broken.Reason, tt.wantSeq)
			}
		})
	}
}

// The per-write savepoints must also isolate a duplicate inside one batch:
// the first of two writes with the same serial commits, the second fails.
func TestDuplicateWithinOneBatch(t *testing.T) {
	s := openTest(t, Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
	errs, err := s.commitBatch(t.Context(), []write{
		{cert: ptr(storetest.Cert("aa")), ev: storetest.Event("aa")},
		{cert: ptr(storetest.Cert("bb")), ev: storetest.Event("bb")},
		{cert: ptr(storetest.Cert("aa")), ev: storetest.Event("aa-again")},
		{ev: storetest.Event("plain event")},
	})
	if err != nil {
		t.Fatalf("commitBatch: %v", err)
	}
	if len(errs) != 4 || errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], store.ErrAlreadyExists) || errs[3] != nil {
		t.Fatalf("item errors = %v, want only item 2 to fail with ErrAlreadyExists", errs)
	}
	if got, want := storetest.AuditLog(t, s), "1:aa 2:bb 3:plain event"; got != want {
		t.Fatalf("audit log %q, want %q (no gap where the duplicate was rolled back)", got, want)
	}
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// BenchmarkRecordIssuance compares group commit with one transaction per
// record, under many concurrent callers (as an issuer under load has).
// Compare the records/s metric of the two sub-benchmarks.
func BenchmarkRecordIssuance(b *testing.B) {
	for _, bc := range []struct {
		name     string
		maxBatch int
	}{
		{"batched", 0},
		{"unbatched", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openTest(b, Config{
				Path:        filepath.Join(b.TempDir(), "bench.db"),
				GroupCommit: store.GroupCommitConfig{MaxBatch: bc.maxBatch},
			})
			b.ResetTimer()
			defer benchcpu.Start(b)()
			storetest.RecordParallel(b, s)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// TestPragmas checks the durability settings actually reached the
// connections: WAL, synchronous=FULL and foreign keys on the writer, and
// read-only readers.
func TestPragmas(t *testing.T) {
	s := openTest(t, Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
	tests := []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.w, "journal_mode", "wal"},
		{s.w, "synchronous", "2"}, // FULL
		{s.w, "foreign_keys", "1"},
		{s.w, "busy_timeout", "5000"},
		{s.w, "wal_autocheckpoint", "4000"},
		{s.r, "query_only", "1"},
		{s.r, "busy_timeout", "5000"},
	}
	for _, tt := range tests {
		var got string
		if err := tt.db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
		}
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &Config{})
}

func TestMetrics(t *testing.T) {
	storetest.RunMetrics(t, func(t *testing.T, m *store.Metrics) storetest.MetricsUnderTest {
		s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "meshca.db"), GroupCommit: store.GroupCommitConfig{Metrics: m}})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
