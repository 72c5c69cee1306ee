package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/postgres/pgtest"
)

func openStore(tb testing.TB, dsn string) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, MaxConns: 4, CommitTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// storedSerials returns the serials of every certificate row, and the
// cluster of every audit event in sequence order.
func storedSerials(tb testing.TB, dsn string) (serials map[string]bool, eventClusters []string) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT serial FROM certificates`)
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatal(err)
	}
	serials = make(map[string]bool, len(list))
	for _, s := range list {
		serials[s] = true
	}
	rows, _ = conn.Query(ctx, `SELECT cluster FROM audit_events ORDER BY seq`)
	if eventClusters, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		tb.Fatal(err)
	}
	return serials, eventClusters
}

// load drives issuance from concurrent clients and tallies the outcomes.
type load struct {
	phase atomic.Int32 // set by the test; each request notes it when it starts

	mu       sync.Mutex
	received map[string]bool    // serials of certificates clients received
	okIn     map[int32]int      // successes by the phase the request started in
	failIn   map[int32]int      // failures by the phase the request started in
	codes    map[codes.Code]int // failures by gRPC code
	firstErr map[codes.Code]error
}

func newLoad() *load {
	return &load{received: map[string]bool{}, okIn: map[int32]int{}, failIn: map[int32]int{},
		codes: map[codes.Code]int{}, firstErr: map[codes.Code]error{}}
}

// run starts clients goroutines that each issue against the replicas in
// turn until stop is closed or they made maxPerClient requests, and returns
// a function that waits for them.
func (l *load) run(clients, maxPerClient int, replicas []*replica, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range maxPerClient {
				select {
				case <-stop:
					return
				default:
				}
				phase := l.phase.Load()
				serial, err := replicas[(c+i)%len(replicas)].issue(c*maxPerClient + i)
				l.note(phase, serial, err)
			}
		})
	}
	return wg.Wait
}

func (l *load) note(phase int32, serial string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		code := status.Code(err)
		l.failIn[phase]++
		l.codes[code]++
		if l.firstErr[code] == nil {
			l.firstErr[code] = err
		}
		return
	}
	l.okIn[phase]++
	l.received[serial] = true
}

// count returns the successes and failures of requests started in phase.
func (l *load) count(phase int32) (ok, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.okIn[phase], l.failIn[phase]
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTwoReplicasShareOneDatabase: 16 concurrent clients issue for a
// bounded time against two issuer instances, each with its own store (pool
// and group committer) on one database. Afterwards the chain verifies, its
// events interleave both replicas, and the certificates the clients received
// are exactly the rows stored.
func TestTwoReplicasShareOneDatabase(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	f := newFleet(t)
	// Both replicas start (and migrate) at once.
	stores := make([]*postgres.Store, 2)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i] = openStore(t, dsn) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	replicas := []*replica{f.startReplica(t, "replica-a", stores[0]), f.startReplica(t, "replica-b", stores[1])}

	const clients, duration, maxPerClient = 16, 3 * time.Second, 20000
	l := newLoad()
	stop := make(chan struct{})
	wait := l.run(clients, maxPerClient, replicas, stop)
	time.AfterFunc(duration, func() { close(stop) })
	wait()
	for _, s := range stores {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	ok, failed := l.count(0)
	if failed > 0 {
		t.Fatalf("%d of %d requests failed: %v", failed, ok+failed, l.firstErr)
	}
	if ok == 0 {
		t.Fatal("no certificate was issued")
	}

	stored, clusters := storedSerials(t, dsn)
	if len(stored) != len(l.received) {
		t.Errorf("clients received %d certificates, the database holds %d rows", len(l.received), len(stored))
	}
	for s := range l.received {
		if !stored[s] {
			t.Fatalf("certificate %s was received but not recorded", s)
		}
	}
	head, err := postgres.VerifyAuditLog(t.Context(), dsn)
	if err != nil {
		t.Fatalf("VerifyAuditLog: %v", err)
	}
	if head.Seq != int64(len(l.received)) {
		t.Errorf("audit chain has %d events for %d certificates", head.Seq, len(l.received))
	}
	switches := 0
	for i := 1; i < len(clusters); i++ {
		if clusters[i] != clusters[i-1] {
			switches++
		}
	}
	if switches == 0 {
		t.Errorf("the chain's events are not interleaved between the replicas: %d switches", switches)
	}
	t.Logf("%d certificates from %d clients in %v (%.0f/s); chain of %d events, %d replica switches",
		ok, clients, duration, float64(ok)/duration.Seconds(), head.Seq, switches)
}

// Load phases of TestDatabaseOutage.
const (
	phaseUp int32 = iota
	phaseStopping
	phaseDown
	phaseRestarted
)

// TestDatabaseOutage stops a private PostgreSQL cluster under load: issuance
// fails closed with Unavailable and no certificate leaves without its
// record; when the database is back, issuance resumes on its own (same store,
// same pool, no restart); afterwards nothing is lost and nothing extra is
// recorded beyond writes whose commit outcome the store reported unknown.
func TestDatabaseOutage(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	dsn := cluster.AdminDSN // the cluster is private and thrown away
	f := newFleet(t)
	rec := &trackingRecorder{rec: openStore(t, dsn)}
	r := f.startReplica(t, "east", rec)

	l := newLoad()
	stop := make(chan struct{})
	wait := l.run(8, 100000, []*replica{r}, stop)
	stopLoad := sync.OnceFunc(func() { close(stop); wait() })
	defer stopLoad()
	ok := func(p int32) int { n, _ := l.count(p); return n }
	failed := func(p int32) int { _, n := l.count(p); return n }

	waitFor(t, "issuance before the outage", 30*time.Second, func() bool { return ok(phaseUp) >= 200 })
	l.phase.Store(phaseStopping)
	cluster.Stop(t)
	l.phase.Store(phaseDown)
	waitFor(t, "failures during the outage", 30*time.Second, func() bool { return failed(phaseDown) >= 100 })
	l.phase.Store(phaseRestarted)
	cluster.Start(t)
	waitFor(t, "issuance after the database came back", 60*time.Second, func() bool { return ok(phaseRestarted) >= 200 })
	stopLoad()

	if n := ok(phaseDown); n != 0 {
		t.Errorf("%d certificates issued by requests started while the database was down", n)
	}
	for code, n := range l.codes {
		if code != codes.Unavailable {
			t.Errorf("%d requests failed with %v, want only Unavailable: %v", n, code, l.firstErr[code])
		}
	}
	checkNothingLostNothingExtra(t, dsn, l.received, rec.unknownSerials())
	t.Logf("ok before/stopping/down/after: %d/%d/%d/%d; failed: %d/%d/%d/%d; unknown commit outcomes: %d",
		ok(phaseUp), ok(phaseStopping), ok(phaseDown), ok(phaseRestarted),
		failed(phaseUp), failed(phaseStopping), failed(phaseDown), failed(phaseRestarted), len(rec.unknownSerials()))
}

// checkNothingLostNothingExtra checks every received certificate is
// recorded, every recorded one was received or had an unknown commit
// outcome, and the chain verifies with one event per row.
func checkNothingLostNothingExtra(t *testing.T, dsn string, received, unknown map[string]bool) {
	t.Helper()
	stored, _ := storedSerials(t, dsn)
	for s := range received {
		if !stored[s] {
			t.Errorf("certificate %s was released without a record", s)
		}
	}
	for s := range stored {
		if !received[s] && !unknown[s] {
			t.Errorf("certificate %s is recorded but was neither released nor reported as of unknown outcome", s)
		}
	}
	head, err := postgres.VerifyAuditLog(t.Context(), dsn)
	if err != nil {
		t.Fatalf("VerifyAuditLog: %v", err)
	}
	if head.Seq != int64(len(stored)) {
		t.Errorf("audit chain has %d events for %d certificate rows", head.Seq, len(stored))
	}
	if t.Failed() {
		t.Logf("received %d, stored %d, unknown outcome %d", len(received), len(stored), len(unknown))
	}
}
