package multicluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/vaulttest"
)

// Root replica settings, short enough to watch two automatic rotations in
// under a minute. A root lives replicaRootTTL plus 30 s of backdating and
// is rotated when less than a third of that remains: 20 s after it was
// made. A propagation delay under the default tick makes `root serve`
// re-evaluate (and try for the leader lease) every second.
const (
	replicaRootTTL         = 45 * time.Second
	replicaIntermediateTTL = 12 * time.Second
	replicaPropagation     = 2 * time.Second
	// replicaTakeover bounds the time from the leader's SIGKILL until the
	// other replica holds the lease: PostgreSQL ends the dead session at
	// once, and the survivor tries at its next tick (1 s).
	replicaTakeover = 5 * time.Second
	// replicaFollowerLag is how long a follower may publish a root CRL
	// numbered below one the leader already published: the one tick it
	// takes to read the stored CRL, plus the observer's polling interval.
	replicaFollowerLag = 2*time.Second + replicaPoll
	replicaPoll        = 200 * time.Millisecond
)

// Log messages of `root serve` (JSON, "msg") that the test reads.
const (
	msgTookLease = "took the leader lease: this root server creates roots and signs root CRLs"
	msgLostLease = "lost the leader lease"
)

// TestRootReplicasProcesses runs two `meshca root serve` processes, root-a
// and root-b, on one PostgreSQL database, with their root keys in one
// Vault Transit engine, and short root lifetimes so that automatic
// rotations happen during the test. An issuer reaches both through a
// Service-like TCP front (each connection to the next replica that
// accepts). It checks that:
//
//   - one replica at a time holds the leader lease, and only the holder
//     creates roots: the store ends with exactly three roots, the first and
//     the first rotation made by root-a, the second rotation by root-b;
//   - both replicas serve the same bundle content (roots, active root, root
//     CRLs) once a change has reached both, and each one's bundle sequence
//     only rises;
//   - root CRL numbers, as an agent moving between replicas sees them,
//     never go back (bar a follower's one-tick lag), and one number always
//     means one CRL;
//   - after root-a (the leader) is killed with SIGKILL, root-b takes the
//     lease within replicaTakeover, signs root CRLs, rotates the root, and
//     the issuer keeps renewing through it;
//   - root-a, started again, follows: it creates nothing, signs nothing
//     and serves what root-b serves;
//   - the audit chain verifies.
func TestRootReplicasProcesses(t *testing.T) {
	v := vaulttest.Shared(t)
	dsn := pgtest.CreateDatabase(t, pgtest.AdminDSN(t))
	body := replicaRootConfig(t, v, dsn)
	a := startNamedRoot(t, "root-a", body)
	b := startNamedRoot(t, "root-b", body)
	if n, m := leaseTakes(a), leaseTakes(b); n != 1 || m != 0 {
		t.Fatalf("leader lease taken %d times by root-a (the first) and %d times by root-b, want 1 and 0", n, m)
	}
	first := storedRoots(t, dsn)
	if len(first) != 1 {
		t.Fatalf("store holds %d roots after both replicas started, want 1", len(first))
	}

	svc := startService(t, a.Addr, b.Addr)
	front := *a
	front.Addr = svc.addr
	east := startIssuer(t, &front, "east", "east.example", "")
	obs := observeBundles(t, a, b)

	// A revocation on the follower's admin socket: the leader signs the
	// new root CRL at its next tick, and the follower publishes it.
	serial := revokeSomething(t, b)
	waitUntil(t, "root-b publishing root CRLs that list a serial it revoked", 10*time.Second, func() bool { return obs.listsEverywhere(b.name, serial) })

	// First automatic rotation, by the leader root-a.
	waitUntil(t, "the first automatic rotation", 2*replicaRootTTL, func() bool { return len(storedRoots(t, dsn)) == 2 })
	waitUntil(t, "the second root active on root-b", 2*replicaPropagation+5*time.Second, func() bool { return activeRoot(t, b) == storedRoots(t, dsn)[1] })
	obs.converge(t, "after the first rotation")

	// SIGKILL of the leader: root-b takes over.
	if n, m := leaseTakes(b), len(logLines(b.Proc, "root CRL signed")); n != 0 || m != 0 {
		t.Fatalf("root-b took the leader lease %d times and signed %d root CRLs while root-a held the lease", n, m)
	}
	renewed := intermediateRenewals(east)
	killed := time.Now()
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	obs.drop(a.name)
	created := map[string][]string{"root-a": createdRoots(a)}
	b.WaitFor(t, "the leader lease", replicaTakeover, func() bool { return leaseTakes(b) == 1 })
	takeover := time.Since(killed)
	t.Logf("root-b took the leader lease %v after root-a's SIGKILL", takeover.Round(time.Millisecond))

	serial = revokeSomething(t, b)
	waitUntil(t, "root-b signing root CRLs as the leader", 10*time.Second, func() bool { return obs.listsEverywhere(b.name, serial) })

	// Second automatic rotation, by root-b; the issuer renews under it.
	waitUntil(t, "the second automatic rotation", 2*replicaRootTTL, func() bool { return len(storedRoots(t, dsn)) == 3 })
	third := storedRoots(t, dsn)[2]
	waitUntil(t, "the third root active on root-b", 2*replicaPropagation+5*time.Second, func() bool { return activeRoot(t, b) == third })
	waitUntil(t, "an intermediate of east under the third root", 3*replicaIntermediateTTL, func() bool { return intermediatesUnder(t, dsn, "east", third) > 0 })
	if n := intermediateRenewals(east) - renewed; n < 2 {
		t.Errorf("east renewed its intermediate %d times after root-a's SIGKILL, want at least 2", n)
	}

	// root-a back, on its old config and data: a follower now.
	a.restart(t)
	obs.add(a)
	obs.converge(t, "after root-a's restart")
	obs.stop()
	if n := leaseTakes(a) + len(logLines(a.Proc, "root CRL signed")); n != 0 {
		t.Errorf("root-a, restarted, took the leader lease or signed root CRLs (%d log lines) while root-b held the lease", n)
	}

	created["root-a restarted"], created["root-b"] = createdRoots(a), createdRoots(b)
	checkRootCreators(t, dsn, created, map[string]int{"root-a": 2, "root-b": 1})
	if strings.Contains(b.Output(), msgLostLease) {
		t.Errorf("root-b lost the leader lease")
	}
	obs.report(t)
	t.Logf("east: %d renewals after the SIGKILL; service connections: %v", intermediateRenewals(east)-renewed, svc.counts())
	out, err := run(t, "audit", "verify", "--store-dsn", dsn)
	if err != nil || !strings.Contains(out, "audit chain verified") {
		t.Errorf("audit verify: err %v, output %q", err, out)
	}
	t.Log(strings.TrimSpace(out))
}

// replicaRootConfig is the YAML of both root replicas: keys in Vault
// Transit under one prefix, store in the PostgreSQL database at dsn.
func replicaRootConfig(t *testing.T, v *vaulttest.Server, dsn string) string {
	t.Helper()
	return vaultKeyConfig(t, v) + fmt.Sprintf(`store: {dsn: %q}
rootTTL: %s
intermediateTTL: %s
rotation:
  auto: true
  propagationDelay: %s
`, dsn, replicaRootTTL, replicaIntermediateTTL, replicaPropagation)
}

// logLines decodes the JSON log lines of p with message msg.
func logLines(p *harness.Proc, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(p.Output()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func leaseTakes(r *rootProc) int { return len(logLines(r.Proc, msgTookLease)) }

// intermediateRenewals counts the intermediates the issuer received by
// renewal.
func intermediateRenewals(is *issuerProc) int {
	return len(logLines(is.Proc, "intermediate renewed by the root"))
}

// createdRoots lists the fingerprints of the roots r says it created.
func createdRoots(r *rootProc) []string {
	var out []string
	for _, msg := range []string{"created the first root", "rotated the root automatically", "rotated the root"} {
		for _, m := range logLines(r.Proc, msg) {
			if fp, ok := m["sha256"].(string); ok {
				out = append(out, fp)
			}
		}
	}
	return out
}

// checkRootCreators checks that the store holds exactly the roots the
// replicas' processes say they created (created: by process), each once,
// and want[p] of them by process p.
func checkRootCreators(t *testing.T, dsn string, created map[string][]string, want map[string]int) {
	t.Helper()
	stored := storedRoots(t, dsn)
	var claimed []string
	for p, got := range created {
		if len(got) != want[p] {
			t.Errorf("%s created %d roots %v, want %d", p, len(got), got, want[p])
		}
		claimed = append(claimed, got...)
		t.Logf("%s created %d roots", p, len(got))
	}
	slices.Sort(claimed)
	sorted := slices.Sorted(slices.Values(stored))
	if !slices.Equal(claimed, sorted) {
		t.Errorf("roots in the store %v, roots the replicas created %v", sorted, claimed)
	}
	var creates int
	queryRow(t, dsn, `SELECT count(*) FROM audit_events WHERE action = 'root.create'`, &creates)
	if creates != len(stored) {
		t.Errorf("%d root.create audit events for %d roots", creates, len(stored))
	}
}

// storedRoots lists the fingerprints of the roots in the store at dsn, by
// activation.
func storedRoots(t *testing.T, dsn string) []string {
	t.Helper()
	var out []string
	withConn(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
		rows, err := conn.Query(ctx, `SELECT fingerprint FROM roots ORDER BY activate_at, added_at`)
		if err == nil {
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	return out
}

// intermediatesUnder counts the intermediates of cluster signed by root.
func intermediatesUnder(t *testing.T, dsn, cluster, root string) int {
	t.Helper()
	var n int
	queryRow(t, dsn, `SELECT count(*) FROM intermediates WHERE cluster = $1 AND root_fingerprint = $2`, &n, cluster, root)
	return n
}

func queryRow(t *testing.T, dsn, query string, out any, args ...any) {
	t.Helper()
	withConn(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, query, args...).Scan(out); err != nil {
			t.Fatal(err)
		}
	})
}

func withConn(t *testing.T, dsn string, fn func(context.Context, *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	fn(ctx, conn)
}

// revokeSomething revokes a random serial on r's admin socket: every root
// CRL then lists it, so the leader signs new ones. It returns the serial.
func revokeSomething(t *testing.T, r *rootProc) string {
	t.Helper()
	serial := make([]byte, 16)
	_, _ = rand.Read(serial)
	serial[0] &= 0x7f
	h := hex.EncodeToString(serial)
	if err := r.admin(t, nil, "revoke", "--serial", h, "--reason", "test"); err != nil {
		t.Fatal(err)
	}
	return h
}

// service is a TCP front for several replicas, as a Kubernetes Service
// is: each connection goes to the next backend that accepts it.
type service struct {
	addr     string
	backends []string
	mu       sync.Mutex
	next     int
	conns    map[string]int
}

func startService(t *testing.T, backends ...string) *service {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &service{addr: lis.Addr().String(), backends: backends, conns: map[string]int{}}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go s.forward(c)
		}
	}()
	return s
}

// forward pipes c to the first backend, from the next in turn, that
// accepts a connection; it closes c when none does.
func (s *service) forward(c net.Conn) {
	defer c.Close()
	s.mu.Lock()
	first := s.next
	s.next = (s.next + 1) % len(s.backends)
	s.mu.Unlock()
	for i := range s.backends {
		addr := s.backends[(first+i)%len(s.backends)]
		up, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.conns[addr]++
		s.mu.Unlock()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
		<-done
		up.Close()
		return
	}
}

func (s *service) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.conns)
}
