package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/benchcpu"
)

// EnvBin names the environment variable with the directory of the
// PostgreSQL server binaries (initdb, pg_ctl) for private clusters.
const EnvBin = "MESHCA_TEST_POSTGRES_BIN"

// DefaultBin is where Debian's postgresql-15 package puts them.
const DefaultBin = "/usr/lib/postgresql/15/bin"

// ctlTimeout bounds initdb and each pg_ctl start or stop.
const ctlTimeout = 2 * time.Minute

// Cluster is a private, throw-away PostgreSQL cluster listening on
// 127.0.0.1 and a Unix socket in its own directory, for tests that stop and
// restart the database. It is removed when the test ends.
type Cluster struct {
	// AdminDSN is the DSN of its postgres database (trust auth).
	AdminDSN string
	// Port is its TCP port on 127.0.0.1; it keeps it across restarts.
	Port int

	bin, dir, data string
	asPostgres     bool // run the tools as the postgres user (we are root)

	mu      sync.Mutex
	running bool
}

// StartCluster initializes and starts a private cluster. Without the
// PostgreSQL binaries tb fails if CI=true and is skipped otherwise.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	bin := os.Getenv(EnvBin)
	if bin == "" {
		bin = DefaultBin
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		unavailable(tb, "PostgreSQL server binaries are missing: %v", err)
	}
	dir, err := os.MkdirTemp("", "meshca-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	c := &Cluster{bin: bin, dir: dir, data: filepath.Join(dir, "data"), asPostgres: os.Geteuid() == 0}
	tb.Cleanup(func() {
		c.mu.Lock()
		if c.running {
			// Nothing to keep: no need for a clean shutdown.
			if out, err := c.ctl("stop", "-m", "immediate"); err != nil {
				tb.Errorf("stop private cluster: %v\n%s", err, out)
			}
		}
		c.mu.Unlock()
		os.RemoveAll(dir)
	})
	if c.asPostgres {
		// initdb refuses to run as root; the cluster belongs to postgres.
		if err := chownToPostgres(dir); err != nil {
			tb.Fatal(err)
		}
	}
	if out, err := c.run(c.tool("initdb"), "-D", c.data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	c.startOnFreePort(tb)
	return c
}

// startOnFreePort picks a free port and starts the cluster on it, trying
// again (a few times) if another process took the port in between.
func (c *Cluster) startOnFreePort(tb testing.TB) {
	tb.Helper()
	const attempts = 3
	for i := 1; ; i++ {
		c.Port = testkit.FreePort(tb)
		out, err := c.start()
		if err == nil {
			break
		}
		if i == attempts || !strings.Contains(c.log(), "could not bind") {
			tb.Fatalf("start private cluster: %v\n%s\nserver log:\n%s", err, out, c.log())
		}
	}
	c.AdminDSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
}

// Stop shuts the cluster down the way an administrator's fast shutdown does:
// open transactions are rolled back and connections are closed.
func (c *Cluster) Stop(tb testing.TB) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if out, err := c.ctl("stop", "-m", "fast"); err != nil {
		tb.Fatalf("stop private cluster: %v\n%s", err, out)
	}
	c.running = false
}

// Start starts the stopped cluster again, on the same port.
func (c *Cluster) Start(tb testing.TB) {
	tb.Helper()
	if out, err := c.start(); err != nil {
		tb.Fatalf("start private cluster: %v\n%s\nserver log:\n%s", err, out, c.log())
	}
}

func (c *Cluster) start() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", c.Port, c.dir)
	out, err := c.ctl("start", "-l", c.logPath(), "-o", opts)
	if err == nil {
		c.running = true
	}
	return out, err
}

// ctl runs pg_ctl on the cluster, waiting for the action to complete.
func (c *Cluster) ctl(action string, args ...string) ([]byte, error) {
	args = append([]string{action, "-D", c.data, "-w", "-t", strconv.Itoa(int(ctlTimeout.Seconds()))}, args...)
	return c.run(c.tool("pg_ctl"), args...)
}

func (c *Cluster) tool(name string) string { return filepath.Join(c.bin, name) }

func (c *Cluster) logPath() string { return filepath.Join(c.dir, "server.log") }

func (c *Cluster) log() string {
	b, _ := os.ReadFile(c.logPath())
	return string(b)
}

// run runs a PostgreSQL tool, as the postgres user when we are root.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout+30*time.Second)
	defer cancel()
	if c.asPostgres {
		args = append([]string{"-u", "postgres", "--", name}, args...)
		name = "runuser"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

func chownToPostgres(dir string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("private cluster: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return err
	}
	return os.Chown(dir, uid, gid)
}

// cpuTime returns the CPU time (user + system) the cluster's processes have
// used so far: the postmaster, its live children (backends, WAL writer,
// checkpointer, ...) and the children that have exited. Benchmarks add it to
// their own process's CPU time, because the database's work per operation
// runs outside the Go process. Linux only (it reads /proc).
func (c *Cluster) cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	pidFile, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		tb.Fatalf("private cluster cpu time: %v", err)
	}
	postmaster := strings.SplitN(string(pidFile), "\n", 2)[0]
	procs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		tb.Fatal(err)
	}
	var total time.Duration
	for _, p := range procs {
		f, err := benchcpu.ReadStat(p)
		if err != nil {
			continue // exited meanwhile
		}
		switch {
		case f.PID == postmaster:
			total += f.UTime + f.STime + f.CUTime + f.CSTime
		case f.PPID == postmaster:
			total += f.UTime + f.STime
		}
	}
	return total
}
