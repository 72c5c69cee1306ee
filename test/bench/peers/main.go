package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is the driver's command line.
type config struct {
	systems     []string
	rounds, ops int
	clients     int
	warmUp      int
	meshcaBin   string
	stepBin     string
	spireBin    string
	postgresDSN string
	keep        bool
}

// allSystems is every system the driver knows, in report order.
var allSystems = []string{"meshca-sqlite", "meshca-fresh", "meshca-pg", "step-ca", "spire"}

func main() {
	var cfg config
	var systems string
	flag.StringVar(&systems, "systems", strings.Join(allSystems, ","), "comma-separated systems to measure: "+strings.Join(allSystems, ", "))
	flag.IntVar(&cfg.rounds, "rounds", 5, "measured rounds; each runs every system once, in an order that rotates")
	flag.IntVar(&cfg.ops, "ops", 2000, "certificates per system per round")
	flag.IntVar(&cfg.clients, "clients", 64, "concurrent clients, each on its own persistent connection")
	flag.IntVar(&cfg.warmUp, "warmup", 10, "certificates each client requests before the first round")
	flag.StringVar(&cfg.meshcaBin, "meshca", os.Getenv("MESHCA_BIN"), "meshca binary (env MESHCA_BIN)")
	flag.StringVar(&cfg.stepBin, "step-ca", os.Getenv("PEERS_STEPCA_BIN"), "step-ca binary (env PEERS_STEPCA_BIN)")
	flag.StringVar(&cfg.spireBin, "spire-server", os.Getenv("PEERS_SPIRE_BIN"), "spire-server binary (env PEERS_SPIRE_BIN)")
	flag.StringVar(&cfg.postgresDSN, "postgres", envOr("MESHCA_TEST_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL server for meshca-pg; a database is created on it and dropped (env MESHCA_TEST_POSTGRES_DSN)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the servers' directories (configuration, logs, databases) and print where")
	flag.Parse()
	cfg.systems = strings.Split(systems, ",")
	// The servers run in directories of their own: resolve relative paths
	// against the current one.
	for _, bin := range []*string{&cfg.meshcaBin, &cfg.stepBin, &cfg.spireBin} {
		if *bin != "" && strings.ContainsRune(*bin, os.PathSeparator) {
			if abs, err := filepath.Abs(*bin); err == nil {
				*bin = abs
			}
		}
	}
	// An interrupt fails the requests in flight; run then stops the servers
	// and drops the database it created.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (c config) validate() error {
	for _, s := range c.systems {
		if !slices.Contains(allSystems, s) {
			return fmt.Errorf("unknown system %q (known: %s)", s, strings.Join(allSystems, ", "))
		}
	}
	bins := map[string]string{"meshca": c.meshcaBin, "step-ca": c.stepBin, "spire": c.spireBin}
	for _, s := range c.systems {
		kind := strings.SplitN(s, "-", 2)[0]
		if s == "step-ca" {
			kind = s
		}
		bin := bins[kind]
		if bin == "" {
			return fmt.Errorf("%s: no binary given (flags -meshca, -step-ca, -spire-server or make bench-peers)", s)
		}
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	if c.rounds < 1 || c.ops < 1 || c.clients < 1 || c.warmUp < 0 {
		return fmt.Errorf("rounds, ops and clients must be positive")
	}
	return nil
}

// run starts the systems, warms them up, measures cfg.rounds rounds
// alternating between them and writes the table to out.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	ws, err := newWorkloads(cfg.clients)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "meshca-peers-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Fprintln(out, "# servers' directories kept in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	systems, cleanup, err := startSystems(ctx, cfg, dir, ws)
	defer cleanup()
	if err != nil {
		return err
	}
	for _, s := range systems {
		if err := s.warmUp(ctx, cfg.warmUp); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "# %d clients, one connection each; %d rounds x %d certificates per system; GOMAXPROCS %d; load %s\n",
		cfg.clients, cfg.rounds, cfg.ops, runtime.GOMAXPROCS(0), loadAvg())
	idle, err := idleCPU(ctx, systems, 5*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprint(out, "# idle server CPU (no requests, 5 s):")
	for i, s := range systems {
		fmt.Fprintf(out, " %s %.1f ms/s;", s.name, float64(idle[i].Microseconds())/1000)
	}
	fmt.Fprintln(out)
	for r := range cfg.rounds {
		// Rotate the order so that no system always follows the same one
		// (a database's background work, the page cache, ...).
		for i := range systems {
			s := systems[(r+i)%len(systems)]
			if err := s.run(ctx, cfg.ops); err != nil {
				return err
			}
			last := s.rounds[len(s.rounds)-1]
			fmt.Fprintf(out, "round %d %-14s %7.0f certs/s %6.0f server-cpu-us/cert (%d processes)\n", r+1, s.name,
				float64(last.ops)/last.wall.Seconds(), float64(last.cpu.Microseconds())/float64(last.ops), last.procs)
		}
	}
	fmt.Fprintf(out, "# load after: %s\n\n", loadAvg())
	writeTable(out, systems)
	return nil
}

// loadAvg is the first three fields of /proc/loadavg, for the report.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func writeTable(out io.Writer, systems []*system) {
	fmt.Fprintln(out, "| system | certificates/s | server CPU µs/cert (per-round min–max) | p50 ms | p99 ms |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|")
	var ref time.Duration
	for _, s := range systems {
		sum := s.summarize()
		if s.name == "meshca-sqlite" {
			ref = sum.cpuPerCert
		}
		fmt.Fprintf(out, "| %s | %.0f | %d (%d–%d) | %.1f | %.1f |\n", s.name, sum.perSec,
			sum.cpuPerCert.Microseconds(), sum.cpuMin.Microseconds(), sum.cpuMax.Microseconds(),
			ms(sum.p50), ms(sum.p99))
	}
	fmt.Fprintln(out, "\nPer request:")
	for _, s := range systems {
		fmt.Fprintf(out, "- %s: %s\n", s.name, s.does)
	}
	if ref == 0 {
		return
	}
	fmt.Fprintln(out, "\nServer CPU per certificate relative to meshca-sqlite:")
	for _, s := range systems {
		if s.name != "meshca-sqlite" {
			fmt.Fprintf(out, "- %s: %.2f\n", s.name, float64(s.summarize().cpuPerCert)/float64(ref))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
