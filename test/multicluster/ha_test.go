package multicluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/test/harness"
)

const (
	// haClients is how many clients issue at once, spread over the four
	// issuer replicas of both deployments.
	haClients = 16
	// haWarmup is how long the clients run before the kills.
	haWarmup = 2 * time.Second
	// haAfterRestart is how long they run at least after the restarts.
	haAfterRestart = 2 * time.Second
	// haSettle bounds the wait, after haAfterRestart, until every client
	// and every restarted replica has issued since the restarts.
	haSettle = 20 * time.Second
	// haNamespace is the namespace of the clients' service accounts: the
	// certificates counted in the stores are those of this namespace.
	haNamespace = "load"
)

// TestHAReplicasSurviveSIGKILL runs two highly available deployments on
// PostgreSQL, each of two `meshca issuer serve` replicas on one database:
//
//   - A: standalone replicas sharing one root through root.dir (as from one
//     Kubernetes Secret);
//   - B: replicas east-0 and east-1 of cluster east under `meshca root
//     serve` (whose store is a database of its own), both enrolled with
//     the one join token of `meshca admin cluster add east --replicas 2`.
//
// haClients clients issue over the Istio CA API, each alternating between
// the two replicas of its deployment. Mid-load the second replica of each
// deployment is killed with SIGKILL and started again on the same config
// and data directory. Afterwards every certificate received must verify
// against the bundle.pem of every replica of its deployment, the stores
// must hold exactly the certificates received (up to those in flight at a
// kill, see checkStored), and every audit chain must verify.
func TestHAReplicasSurviveSIGKILL(t *testing.T) {
	adminDSN := pgtest.AdminDSN(t)
	a := startStandaloneDeployment(t, pgtest.CreateDatabase(t, adminDSN))
	rootDSN := pgtest.CreateDatabase(t, adminDSN)
	root := startRoot(t, fmt.Sprintf("store: {dsn: %q}\n", rootDSN))
	b := startUpstreamDeployment(t, root, pgtest.CreateDatabase(t, adminDSN))
	deployments := []*haDeployment{a, b}

	load := startLoad(t, deployments, haClients)
	time.Sleep(haWarmup)
	victims := []*haReplica{a.replicas[1], b.replicas[1]}
	for _, r := range victims {
		load.kill(t, r)
	}
	for _, r := range victims {
		r.restart(t)
		load.restarted(r)
	}
	time.Sleep(haAfterRestart)
	load.waitSettled(t, victims, haSettle)
	load.stop()
	load.report(t)

	for _, d := range deployments {
		received := load.received(d)
		checkVerifies(t, d, received)
		checkStored(t, d, received, load.unanswered(d))
	}
	for _, dsn := range []string{a.dsn, b.dsn, rootDSN} {
		out, err := run(t, "audit", "verify", "--store-dsn", dsn)
		if err != nil || !strings.Contains(out, "audit chain verified") {
			t.Errorf("audit verify: err %v, output %q", err, out)
		}
		t.Logf("%s: %s", dbName(t, dsn), strings.TrimSpace(out))
	}
}

// haDeployment is one issuer deployment: its replicas on one database, and
// the directory of the dev token signer they all trust.
type haDeployment struct {
	name     string
	dsn      string
	devKeys  string
	replicas []*haReplica
}

// haReplica is one `meshca issuer serve` replica. Its t.Cleanup (from
// start) stops it with SIGTERM unless it has exited.
type haReplica struct {
	*harness.Proc
	name, config, dir, addr string
	deployment              *haDeployment
}

// restart starts the replica (again) on the same config and data.
func (r *haReplica) restart(t *testing.T) {
	t.Helper()
	r.Proc = start(t, "issuer "+r.name, "issuer", "serve", "--config", r.config, "--log-level", "debug")
	r.WaitListening(t, r.addr)
}

// BundlePath is the root bundle the replica writes into its data dir.
func (r *haReplica) BundlePath() string { return filepath.Join(r.dir, "bundle.pem") }

// startReplicas starts replicas with the configs body(i, dataDir, addr)
// one after another: the first creates what the others share (the root
// recorded in the store, the dev token signer).
func startReplicas(t *testing.T, d *haDeployment, names []string, body func(i int, dir, addr string) string) {
	t.Helper()
	d.devKeys = t.TempDir()
	for i, name := range names {
		r := &haReplica{name: name, dir: t.TempDir(), addr: testkit.FreeAddr(t), deployment: d}
		r.config = harness.WriteFile(t, filepath.Join(t.TempDir(), name+".yaml"), fmt.Sprintf("dataDir: %s\nlisten: %s\n", r.dir, r.addr)+
			fmt.Sprintf("hosts: [\"127.0.0.1\", \"localhost\"]\nstore: {dsn: %q}\n", d.dsn)+body(i, r.dir, r.addr))
		r.restart(t)
		r.WaitFor(t, "bundle.pem", harness.StartTimeout, func() bool { _, err := os.Stat(r.BundlePath()); return err == nil })
		d.replicas = append(d.replicas, r)
	}
}

// startStandaloneDeployment starts deployment A: standalone-0 and
// standalone-1, with one root.dir, on the database at dsn.
func startStandaloneDeployment(t *testing.T, dsn string) *haDeployment {
	t.Helper()
	d := &haDeployment{name: "standalone", dsn: dsn}
	rootDir := t.TempDir()
	startReplicas(t, d, []string{"standalone-0", "standalone-1"}, func(int, string, string) string {
		return fmt.Sprintf(`trustDomain: standalone.example
cluster: standalone
root:
  dir: %s
clusters:
  - name: standalone
    attestor: dev
    devKeyDir: %s
`, rootDir, d.devKeys)
	})
	return d
}

// startUpstreamDeployment starts deployment B: replicas east-0 and east-1
// of cluster east under root, on the database at dsn, both enrolled with
// the one join token that `cluster add east --replicas 2` prints.
func startUpstreamDeployment(t *testing.T, root *rootProc, dsn string) *haDeployment {
	t.Helper()
	d := &haDeployment{name: "east", dsn: dsn}
	token := root.joinToken(t, "east", "east.example", "--replicas", "2")
	startReplicas(t, d, []string{"east-0", "east-1"}, func(i int, _, _ string) string {
		return fmt.Sprintf(`trustDomain: east.example
cluster: east
upstream:
  address: %s
  serverName: %s
  bundleFile: %s
  joinTokenFile: %s
  replica: east-%d
clusters:
  - name: east
    attestor: dev
    devKeyDir: %s
`, root.Addr, rootHost, root.BundlePath(), token, i, d.devKeys)
	})
	return d
}

// storedSerials returns the serials of the certificates of haNamespace in
// the store at dsn.
func storedSerials(t *testing.T, dsn string) map[string]bool {
	t.Helper()
	var serials []string
	withConn(t, dsn, func(ctx context.Context, conn *pgx.Conn) {
		rows, err := conn.Query(ctx, `SELECT serial FROM certificates WHERE spiffe_id LIKE $1`, "spiffe://%/ns/"+haNamespace+"/sa/%")
		if err == nil {
			serials, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	set := make(map[string]bool, len(serials))
	for _, s := range serials {
		set[s] = true
	}
	return set
}

// devToken mints a token of haNamespace/sa signed by d's dev token signer.
func (d *haDeployment) devToken(t *testing.T, sa string) string {
	t.Helper()
	return strings.TrimSpace(mustRun(t, "dev", "token", "--data-dir", d.devKeys, "--namespace", haNamespace, "--service-account", sa, "--ttl", "1h"))
}
