package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), Config{DSN: pgtest.NewDatabase(t), MaxConns: 4})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestRootStoreConformance(t *testing.T) {
	storetest.RunRootStore(t, func(t *testing.T) storetest.RootStoreUnderTest {
		s, err := Open(t.Context(), Config{DSN: pgtest.NewDatabase(t), MaxConns: 4})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestRevocationStoreConformance(t *testing.T) {
	storetest.RunRevocationStore(t, func(t *testing.T) storetest.RevocationStoreUnderTest {
		s, err := Open(t.Context(), Config{DSN: pgtest.NewDatabase(t), MaxConns: 4})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

// openTest opens a store on dsn and closes it at the end of the test.
func openTest(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 4 // the shared server is shared by every test run
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"empty dsn", Config{}},
		{"unparsable dsn", Config{DSN: "postgres://x:y@[::1"}},
		{"negative max conns", Config{DSN: pgtest.DefaultDSN, MaxConns: -1}},
		{"negative commit timeout", Config{DSN: pgtest.DefaultDSN, CommitTimeout: -time.Second}},
		{"negative max batch", Config{DSN: pgtest.DefaultDSN, GroupCommit: store.GroupCommitConfig{MaxBatch: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err == nil {
				t.Fatalf("Validate(%+v) = nil, want an error", tt.cfg)
			}
		})
	}
	if err := (Config{DSN: pgtest.DefaultDSN}).Validate(); err != nil {
		t.Fatalf("Validate(valid) = %v", err)
	}
}

func TestReopenContinuesChain(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, Config{DSN: dsn})
	storetest.Seed(t, s, 3)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openTest(t, Config{DSN: dsn})
	for _, serial := range []string{"s4", "s5"} {
		if err := s.RecordIssuance(t.Context(), storetest.Cert(serial), storetest.Event(serial)); err != nil {
			t.Fatalf("RecordIssuance after reopen: %v", err)
		}
	}
	head, err := VerifyAuditLog(t.Context(), dsn)
	if err != nil {
		t.Fatalf("VerifyAuditLog: %v", err)
	}
	if head.Seq != 5 {
		t.Fatalf("chain head seq %d, want 5", head.Seq)
	}
}

// Text PostgreSQL cannot store fails its own write, before it is queued,
// never its neighbours' batch.
func TestInvalidTextFailsAlone(t *testing.T) {
	s := openTest(t, Config{DSN: pgtest.NewDatabase(t)})
	bad := storetest.Cert("bad1")
	bad.PodUID = "pod\x00uid"
	if err := s.RecordIssuance(t.Context(), bad, storetest.Event("bad1")); err == nil {
		t.Fatal("RecordIssuance with a NUL in pod uid succeeded")
	}
	ev := storetest.Event("x")
	ev.Detail = "\xff\xfe"
	if err := s.AppendAudit(t.Context(), ev); err == nil {
		t.Fatal("AppendAudit with invalid UTF-8 succeeded")
	}
	storetest.Seed(t, s, 1)
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A duplicate within one batch, and one already stored, fail alone; the
// chain has no gap where they were left out.
func TestDuplicateWithinOneBatch(t *testing.T) {
	s := openTest(t, Config{DSN: pgtest.NewDatabase(t)})
	storetest.Seed(t, s, 1) // s1
	errs, err := s.commitBatch(t.Context(), []write{
		{cert: ptr(storetest.Cert("aa")), ev: storetest.Event("aa")},
		{cert: ptr(storetest.Cert("s1")), ev: storetest.Event("s1-again")},
		{cert: ptr(storetest.Cert("bb")), ev: storetest.Event("bb")},
		{cert: ptr(storetest.Cert("aa")), ev: storetest.Event("aa-again")},
		{ev: storetest.Event("plain event")},
	})
	if err != nil {
		t.Fatalf("commitBatch: %v", err)
	}
	if len(errs) != 5 || errs[0] != nil || !errors.Is(errs[1], store.ErrAlreadyExists) || errs[2] != nil ||
		!errors.Is(errs[3], store.ErrAlreadyExists) || errs[4] != nil {
		t.Fatalf("item errors = %v, want only items 1 and 3 to fail with ErrAlreadyExists", errs)
	}
	if got, want := storetest.AuditLog(t, s), "1:s1 2:aa 3:bb 4:plain event"; got != want {
		t.Fatalf("audit log %q, want %q", got, want)
	}
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// The store's own commit timeout is reported as a store failure, not as the
// caller's context.DeadlineExceeded (which the issuer would not map to
// Unavailable). A transaction holding the chain head makes the batch wait.
func TestCommitTimeoutIsNotCallersDeadline(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, Config{DSN: dsn, CommitTimeout: 200 * time.Millisecond})
	storetest.Seed(t, s, 1)
	conn := rawConn(t, dsn)
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), lockHeadSQL); err != nil {
		t.Fatal(err)
	}
	err = s.RecordIssuance(t.Context(), storetest.Cert("late"), storetest.Event("late"))
	if err == nil {
		t.Fatal("RecordIssuance succeeded while the chain head was locked elsewhere")
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		t.Fatalf("RecordIssuance = %v, which reads as the caller's own deadline", err)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Certificate(t.Context(), "late"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Certificate(late) = %v, want ErrNotFound after the failed write", err)
	}
	// Once the head is free, writes succeed again. The 200 ms commit
	// timeout is tight on a loaded machine (race detector, CI), so one
	// timed-out attempt is allowed to be retried, as the issuer's caller
	// would; a write that fails every time for 5 s fails the test.
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		err := s.RecordIssuance(t.Context(), storetest.Cert(fmt.Sprintf("after-%d", i)), storetest.Event("after"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RecordIssuance once the head is free: %v", err)
		}
	}
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A process that stalls while it holds the chain head lock (here: a session
// of the store's pool, idle inside a transaction) is cut off by the server
// after the commit timeout, so other writers get the lock back.
func TestStalledTransactionReleasesChainHead(t *testing.T) {
	s := openTest(t, Config{DSN: pgtest.NewDatabase(t), CommitTimeout: 300 * time.Millisecond})
	stalled, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Release()
	for _, q := range []string{"BEGIN", lockHeadSQL} {
		if _, err := stalled.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for attempt := 0; ; attempt++ {
		serial := fmt.Sprint("after-stall-", attempt)
		err := s.RecordIssuance(t.Context(), storetest.Cert(serial), storetest.Event(serial))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes still fail 15s after another session stalled holding the chain head: %v", err)
		}
	}
	if _, err := stalled.Exec(t.Context(), "SELECT 1"); err == nil {
		t.Fatal("the stalled session survived: the server did not end it")
	}
	if err := s.VerifyAuditChain(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &Config{})
}

func TestMetrics(t *testing.T) {
	storetest.RunMetrics(t, func(t *testing.T, m *store.Metrics) storetest.MetricsUnderTest {
		s, err := Open(t.Context(), Config{DSN: pgtest.NewDatabase(t), MaxConns: 4, GroupCommit: store.GroupCommitConfig{Metrics: m}})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
