package root

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"

	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/sqlite"
)

// replicaSet is two root servers on one store, each with its own store
// handle (as two processes would have), sharing the key directory and the
// clock, driven by explicit re-evaluations.
type replicaSet struct {
	t     *testing.T
	clock *testkit.Clock
	cfg   Config
	logs  *testkit.LogBuffer
	open  func() Store
	// seen is the highest CRL number seen per root across both replicas'
	// bundles, with the CRL that carried it.
	seen map[string]seenCRL
}

type seenCRL struct {
	number *big.Int
	der    []byte
}

func newReplicaSet(t *testing.T, open func(now func() time.Time) Store) *replicaSet {
	rs := &replicaSet{t: t, clock: newFakeClock(), logs: &testkit.LogBuffer{}, seen: map[string]seenCRL{}}
	rs.open = func() Store { return open(rs.clock.Now) }
	rs.cfg = Config{
		Keys:             FileKeys{Dir: t.TempDir()},
		Hosts:            []string{"localhost"},
		TrustDomains:     []string{"example.org"},
		IntermediateTTL:  2 * time.Hour,
		CredentialTTL:    24 * time.Hour,
		RootTTL:          30 * time.Hour,
		PropagationDelay: time.Hour,
		CRLValidity:      4 * time.Hour,
		AutoRotate:       true,
		Tick:             time.Second,
		Logger:           slog.New(slog.NewTextHandler(rs.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:              rs.clock.Now,
	}
	return rs
}

func (rs *replicaSet) start() *Root {
	rs.t.Helper()
	cfg := rs.cfg
	cfg.Store = rs.open()
	r, err := New(context.Background(), cfg)
	if err != nil {
		rs.t.Fatalf("New: %v", err)
	}
	rs.t.Cleanup(func() { _ = r.Close() })
	return r
}

func (rs *replicaSet) refresh(rr ...*Root) {
	rs.t.Helper()
	for _, r := range rr {
		if err := r.refresh(context.Background()); err != nil {
			rs.t.Fatalf("refresh: %v\n%s", err, rs.logs.String())
		}
	}
}

// adminClient serves r's AdminService on a Unix socket until the test ends.
func adminClient(t testing.TB, r *Root) meshcav1.AdminServiceClient {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := adminapi.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Go(t, "ServeAdmin", func(ctx context.Context) error { return r.ServeAdmin(ctx, lis) })
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return meshcav1.NewAdminServiceClient(conn)
}

func isLeader(r *Root) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leader
}

// storedRoots counts the roots recorded in the store.
func (rs *replicaSet) storedRoots(r *Root) int {
	rs.t.Helper()
	roots, err := r.cfg.Store.Roots(context.Background())
	if err != nil {
		rs.t.Fatal(err)
	}
	return len(roots)
}

// observe checks the root CRLs of each replica's published bundle as an
// agent does when it receives them one after the other: per root, the CRL
// number never goes back, and one number always comes with the same CRL.
// It returns how many root CRLs were seen.
func (rs *replicaSet) observe(rr ...*Root) int {
	rs.t.Helper()
	n := 0
	for i, r := range rr {
		b, _ := r.Current()
		for _, d := range b.Domains {
			for _, c := range d.CRLs {
				rl, err := x509.ParseRevocationList(c.DER)
				if err != nil {
					rs.t.Fatal(err)
				}
				issuer := string(rl.RawIssuer) + string(rl.AuthorityKeyId)
				prev, ok := rs.seen[issuer]
				switch {
				case ok && rl.Number.Cmp(prev.number) < 0:
					rs.t.Fatalf("replica %d publishes root CRL number %s after %s was published", i, rl.Number, prev.number)
				case ok && rl.Number.Cmp(prev.number) == 0 && !bytes.Equal(c.DER, prev.der):
					rs.t.Fatalf("replica %d publishes another root CRL under number %s", i, rl.Number)
				}
				rs.seen[issuer] = seenCRL{number: rl.Number, der: c.DER}
				n++
			}
		}
	}
	return n
}

// testReplicas runs two root servers on one store: only the lease holder
// rotates and signs root CRLs, both publish the same CRLs, and when the
// holder stops the other takes over at its next re-evaluation.
func testReplicas(t *testing.T, rs *replicaSet, kill func(t *testing.T, leader *Root)) {
	// Replicas re-evaluate on their own tickers: never at the same instant.
	a := rs.start()
	rs.clock.Advance(time.Second)
	b := rs.start()
	rs.refresh(a)
	rs.clock.Advance(time.Second)
	rs.refresh(b)
	if !isLeader(a) || isLeader(b) {
		t.Fatalf("leader: first %v, second %v; want the first only", isLeader(a), isLeader(b))
	}
	if n := rs.observe(a, b); n == 0 {
		t.Fatal("no root CRL published")
	}

	// Past half the CRL validity the leader re-signs; the follower
	// publishes the same CRL once it re-reads the store.
	for range 6 {
		rs.clock.Advance(time.Hour)
		rs.refresh(a)
		rs.clock.Advance(time.Second)
		rs.refresh(b)
		rs.observe(a, b, a)
	}

	// Rotation is due (9h of 30h left). A follower that re-evaluates first
	// does not rotate; then both re-evaluate together.
	rs.clock.Advance(15 * time.Hour)
	rs.refresh(b)
	if n := rs.storedRoots(b); n != 1 {
		t.Fatalf("%d roots after the follower's re-evaluation, want 1 (only the leader rotates)", n)
	}
	var wg sync.WaitGroup
	for _, r := range []*Root{a, b} {
		wg.Go(func() { rs.refresh(r) })
	}
	wg.Wait()
	rs.refresh(a, b)
	if n := rs.storedRoots(a); n != 2 {
		t.Fatalf("%d roots after rotation was due on two replicas, want exactly 2", n)
	}
	// An administrator's rotation on the follower is refused, naming the
	// lease; on the leader it goes through.
	_, err := adminClient(t, b).RotateRoot(t.Context(), &meshcav1.RotateRootRequest{Force: true})
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), "leader lease") {
		t.Fatalf("RotateRoot on the follower: %v, want the leader lease named", err)
	}
	if n := rs.storedRoots(a); n != 2 {
		t.Fatalf("%d roots after a refused rotation, want 2", n)
	}
	rs.observe(a, b)

	// The leader goes away: the follower takes over at its next
	// re-evaluation and continues the CRL numbers.
	kill(t, a)
	rs.clock.Advance(time.Second)
	rs.refresh(b, a)
	if !isLeader(b) || isLeader(a) {
		t.Fatalf("once the leader stopped: leader first %v, second %v; want the second only:\n%s",
			isLeader(a), isLeader(b), rs.logs.String())
	}
	_ = a.Close()
	for range 4 {
		rs.clock.Advance(time.Hour)
		rs.refresh(b)
		rs.observe(b)
	}
	rs.clock.Advance(20 * time.Hour) // the second root is due to rotate
	rs.refresh(b, b)
	if n := rs.storedRoots(b); n != 3 {
		t.Fatalf("%d roots once the new leader's rotation was due, want 3", n)
	}
	rs.observe(b)
}

func TestReplicasSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.db")
	rs := newReplicaSet(t, func(now func() time.Time) Store {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
	testReplicas(t, rs, func(_ *testing.T, leader *Root) { _ = leader.Close() })
}

func TestReplicasPostgres(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	rs := newReplicaSet(t, func(now func() time.Time) Store {
		s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
	// The leader's session dies (its host is gone): PostgreSQL releases
	// the lock.
	testReplicas(t, rs, func(t *testing.T, _ *Root) {
		// With a timeout, pg_terminate_backend returns once the session
		// has ended, so its locks are released.
		pgtest.Exec(t, dsn, `SELECT pg_terminate_backend(pid, 10000) FROM pg_locks
			WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	})
}
