package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

// reloadTimeout bounds the wait for a log line after SIGHUP.
const reloadTimeout = 15 * time.Second

// hangup sends SIGHUP to p.
func hangup(t *testing.T, p *os.Process) {
	t.Helper()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
}

// waitLog waits until log holds, after its first from bytes, a line with
// every one of substrs, and returns that line; it fails the test when the
// process exits (done is closed) or reloadTimeout passes first.
func waitLog(t *testing.T, log *testkit.LogBuffer, from int, done <-chan struct{}, substrs ...string) string {
	t.Helper()
	deadline := time.Now().Add(reloadTimeout)
	for {
		for line := range strings.SplitSeq(log.String()[from:], "\n") {
			if containsAll(line, substrs) {
				return line
			}
		}
		select {
		case <-done:
			t.Fatalf("the process exited before logging %q:\n%s", substrs, log.String())
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v:\n%s", substrs, reloadTimeout, log.String())
		}
	}
}

func containsAll(s string, substrs []string) bool {
	for _, sub := range substrs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestHangupReloadsDev: SIGHUP makes `meshca dev` re-read its config file
// instead of dying: a file that does not validate changes nothing, a new
// logLevel takes effect, a changed leafTTL is named as needing a restart,
// and the server keeps issuing throughout.
func TestHangupReloadsDev(t *testing.T) {
	work := t.TempDir()
	cfgPath := filepath.Join(work, "dev.yaml")
	writeFile(t, cfgPath, "logLevel: warn\n")
	srv := startDev(t, devOptions{Dir: work, Args: []string{"--config", cfgPath}})
	_, tokenFile := mintToken(t, srv.Dir, "token")
	if strings.Contains(srv.Stderr(), `"level":"INFO"`) {
		t.Errorf("logLevel warn, yet INFO lines were logged:\n%s", srv.Stderr())
	}

	writeFile(t, cfgPath, "logLevel: loud\n")
	hangup(t, srv.cmd.Process)
	waitLog(t, &srv.stderr, 0, srv.done, `"level":"ERROR"`, "configuration reload failed; nothing changed", "logLevel")
	if r := fetchCert(t, srv, tokenFile, filepath.Join(work, "certs1")); r.code != 0 {
		t.Fatalf("cert fetch after a SIGHUP with a bad config: %s\n%s", r, srv.Output())
	}

	writeFile(t, cfgPath, "logLevel: info\nleafTTL: 2h\n")
	hangup(t, srv.cmd.Process)
	line := waitLog(t, &srv.stderr, 0, srv.done, `"level":"INFO"`, "configuration reloaded")
	for _, want := range []string{`"reloaded":["logLevel"]`, `"log_level":"INFO"`, `"restart_required":["leafTTL"]`} {
		if !strings.Contains(line, want) {
			t.Errorf("reload log line %s, want %s", line, want)
		}
	}
	waitLog(t, &srv.stderr, 0, srv.done, `"level":"WARN"`, "take effect only after a restart", `"fields":["leafTTL"]`)
	if r := fetchCert(t, srv, tokenFile, filepath.Join(work, "certs2")); r.code != 0 {
		t.Fatalf("cert fetch after a SIGHUP: %s\n%s", r, srv.Output())
	}
}

// TestHangupReloadsAgent: SIGHUP makes the agent (`meshca agent` and
// `meshca-agent`) re-read its config file instead of dying: the new log
// level and token file take effect (renewals go on with the new token after
// the old file is gone), a changed ttl is named as needing a restart, and
// the sockets keep serving.
func TestHangupReloadsAgent(t *testing.T) {
	srv := startShortLivedDev(t)
	for _, argv := range [][]string{{meshcaBin, "agent"}, {agentBinary(t)}} {
		t.Run(filepath.Base(argv[0]), func(t *testing.T) {
			_, tokenA := mintToken(t, srv.Dir, "token-a-"+filepath.Base(argv[0]))
			_, tokenB := mintToken(t, srv.Dir, "token-b-"+filepath.Base(argv[0]))
			dir := t.TempDir()
			a := &agentProc{
				SDSSocket: filepath.Join(dir, "sds.sock"), WorkloadSocket: filepath.Join(dir, "agent.sock"),
				HealthAddr: testkit.FreeAddr(t), done: make(chan struct{}),
			}
			cfgPath := filepath.Join(dir, "agent.yaml")
			config := func(level, token, ttl string) string {
				return fmt.Sprintf("issuer: %s\ncaBundle: %s\ntokenFile: %s\nsdsSocket: %s\nworkloadSocket: %s\nhealthAddr: %s\nttl: %s\nlogLevel: %s\n",
					srv.Addr, srv.BundlePath(), token, a.SDSSocket, a.WorkloadSocket, a.HealthAddr, ttl, level)
			}
			writeFile(t, cfgPath, config("warn", tokenA, "2s"))
			a.cmd = exec.Command(argv[0], append(argv[1:], "--config", cfgPath)...)
			a.cmd.Stderr = &a.stderr
			if err := a.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { a.err = a.cmd.Wait(); close(a.done) }()
			t.Cleanup(func() { a.stop(t) })
			if code, body := a.waitReadyz(t, http.StatusOK); code != http.StatusOK {
				t.Fatalf("agent not ready: %d %q\n%s", code, body, a.stderr.String())
			}
			if strings.Contains(a.stderr.String(), `"level":"INFO"`) {
				t.Errorf("logLevel warn, yet INFO lines were logged:\n%s", a.stderr.String())
			}

			writeFile(t, cfgPath, config("info", tokenB, "3s"))
			hangup(t, a.cmd.Process)
			line := waitLog(t, &a.stderr, 0, a.done, "configuration reloaded")
			for _, want := range []string{`"reloaded":["tokenFile","logLevel"]`, `"log_level":"INFO"`, `"restart_required":["ttl"]`} {
				if !strings.Contains(line, want) {
					t.Errorf("reload log line %s, want %s", line, want)
				}
			}
			// Renewals now read the new token file: the old one is gone.
			if err := os.Remove(tokenA); err != nil {
				t.Fatal(err)
			}
			from := len(a.stderr.String())
			waitLog(t, &a.stderr, from, a.done, "certificate obtained")
			from = len(a.stderr.String())
			waitLog(t, &a.stderr, from, a.done, "certificate obtained")
			if code, body := a.waitReadyz(t, http.StatusOK); code != http.StatusOK {
				t.Errorf("agent not ready after SIGHUP: %d %q", code, body)
			}
			if strings.Contains(a.stderr.String(), "read token") {
				t.Errorf("a renewal read the old token file:\n%s", a.stderr.String())
			}
		})
	}
}
