package interop

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sidecarRSSStreams is the load each sidecar carries while it is measured: 10 SDS streams,
// `default` and `ROOTCA` alternately, each having received its first secret.
const sidecarRSSStreams = 10

// BenchmarkSidecarRSS measures the resident memory of meshca-agent ($MESHCA_AGENT_BIN, else
// built here as `make build` does) and of Istio's pilot-agent (the test bed's build) serving
// the same identity, from the same `meshca dev`, over SDS to sidecarRSSStreams streams. Each
// iteration runs both, one after the other, alternating which goes first so that drift of the
// shared machine hits both alike; each sidecar is a fresh process per sample and only its own
// process is measured (pilot-agent's stub Envoy is not counted).
//
// Both run with their defaults except what the comparison needs: meshca-agent with
// --sds-socket, --health-addr (a free port) and --ttl 24h; pilot-agent as startPilotAgent runs
// it (status port on, SECRET_TTL 24h by default). Their default keys differ: ECDSA P-256 for
// meshca-agent, RSA-2048 for pilot-agent.
//
// Reported: the median VmRSS, RssAnon and RssFile (kB) of each, and the ratio of the medians
// meshca-agent / pilot-agent. `make bench-sidecar-rss` runs
//
//	go test -run '^$' -bench SidecarRSS -benchtime 3x -v
func BenchmarkSidecarRSS(b *testing.B) {
	paBin := pilotAgentBinary(b)
	maBin := meshcaAgentBinary(b)
	bin := meshcaBinary(b)
	dev := startDev(b, bin)
	token := mintToken(b, bin, dev.dataDir, namespace, serviceAcct, istioAudience)

	type sidecar struct {
		pid    int
		socket string
		stop   func()
	}
	starts := map[string]func() sidecar{
		"meshca-agent": func() sidecar {
			a := startMeshcaAgent(b, maBin, dev, token)
			return sidecar{a.pid(), a.sdsSocket, func() { a.stopClean(b) }}
		},
		"pilot-agent": func() sidecar {
			p := startPilotAgent(b, paBin, dev, token)
			return sidecar{p.pid(), p.sdsSocket, func() { p.stopClean(b) }}
		},
	}
	names := []string{"meshca-agent", "pilot-agent"}
	samples := map[string][]map[string]int{}
	for i := 0; b.Loop(); i++ {
		for j := range names {
			name := names[(i+j)%len(names)]
			s := starts[name]()
			m := streamsRSS(b, s.pid, s.socket)
			s.stop()
			samples[name] = append(samples[name], m)
			b.Logf("%s: VmRSS %d kB (RssAnon %d kB, RssFile %d kB)", name, m["VmRSS"], m["RssAnon"], m["RssFile"])
		}
	}
	for _, field := range []string{"VmRSS", "RssAnon", "RssFile"} {
		ma, pa := medianOf(samples["meshca-agent"], field), medianOf(samples["pilot-agent"], field)
		b.ReportMetric(ma, "meshca-agent-"+field+"-kB")
		b.ReportMetric(pa, "pilot-agent-"+field+"-kB")
		if pa > 0 {
			b.ReportMetric(ma/pa, "ratio-"+field)
		}
	}
}

// meshcaAgentProc is a running meshca-agent serving SDS only.
type meshcaAgentProc struct {
	*proc
	sdsSocket string
}

// startMeshcaAgent runs meshca-agent against dev with token and waits until its SDS socket
// exists.
func startMeshcaAgent(t testing.TB, bin string, dev *devServer, token string) *meshcaAgentProc {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, []byte(token), 0o600)
	a := &meshcaAgentProc{sdsSocket: filepath.Join(dir, "sds.sock")}
	a.proc = startProc(t, "meshca-agent", exec.Command(bin,
		"--issuer", net.JoinHostPort("127.0.0.1", dev.port), "--ca-bundle", dev.bundlePath, "--token-file", tokenFile,
		"--sds-socket", a.sdsSocket, "--health-addr", net.JoinHostPort("127.0.0.1", freePort(t)), "--ttl", "24h"))
	deadline := time.Now().Add(startTimeout)
	for {
		a.failIfExited(t)
		if fi, err := os.Stat(a.sdsSocket); err == nil && fi.Mode().Type() == os.ModeSocket {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshca-agent has no SDS socket at %s after %v\n%s", a.sdsSocket, startTimeout, a.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopClean stops meshca-agent and fails the test unless it exits 0.
func (a *meshcaAgentProc) stopClean(t testing.TB) {
	t.Helper()
	if err := a.stop(t); err != nil {
		t.Errorf("meshca-agent after SIGTERM: %v, want exit 0\n%s", err, a.output())
	}
}

// meshcaAgentBinary returns $MESHCA_AGENT_BIN, or builds ../../cmd/meshca-agent as `make build`
// does (-tags grpcnotrace). A failed build fails the test.
func meshcaAgentBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("MESHCA_AGENT_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatalf("MESHCA_AGENT_BIN=%q: %v", bin, err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("MESHCA_AGENT_BIN=%q: %v", bin, err)
		}
		return abs
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "meshca-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-o", bin, "./cmd/meshca-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meshca-agent in %s: %v\n%s", root, err, out)
	}
	return bin
}

// streamsRSS opens sidecarRSSStreams SDS streams on socket (default and ROOTCA alternately),
// waits for each one's first secret, and returns the process's memory (/proc/PID/status, kB).
func streamsRSS(t testing.TB, pid int, socket string) map[string]int {
	t.Helper()
	sds := dialSDS(t, socket)
	defer sds.conn.Close() // before the sidecar stops: its graceful stop need not wait for us
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel() // ends the streams
	for i := range sidecarRSSStreams {
		if _, err := sds.fetchSecret(ctx, []string{"default", "ROOTCA"}[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	return procStatus(t, pid)
}

// procStatus returns the kB fields of /proc/PID/status.
func procStatus(t testing.TB, pid int) map[string]int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.Lines(string(data)) {
		name, rest, ok := strings.Cut(line, ":")
		if f := strings.Fields(rest); ok && len(f) == 2 && f[1] == "kB" {
			if v, err := strconv.Atoi(f[0]); err == nil {
				out[name] = v
			}
		}
	}
	return out
}

// medianOf returns the median of field over samples (the lower middle one for an even count).
func medianOf(samples []map[string]int, field string) float64 {
	var v []int
	for _, m := range samples {
		v = append(v, m[field])
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return float64(v[(len(v)-1)/2])
}
