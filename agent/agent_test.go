package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshca/meshca/internal/testkit"
)

// runningAgent is an Agent run by a test against a testIssuer, with every
// endpoint on: SDS and Workload API sockets, files and health.
type runningAgent struct {
	*Agent
	cfg    Config
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error
}

func runAgent(t *testing.T, ti *testIssuer, ttl time.Duration) *runningAgent {
	t.Helper()
	return startAgent(t, ti.addr, ti.bundleFile, ti.tokenFile(t), ttl)
}

// startAgent runs an agent against the issuer at addr until the test ends.
func startAgent(t *testing.T, addr, bundleFile, tokenFile string, ttl time.Duration) *runningAgent {
	t.Helper()
	return startAgentWith(t, addr, bundleFile, tokenFile, ttl, nil)
}

// startAgentWith is startAgent with tweak (if not nil) applied to the
// configuration.
func startAgentWith(t *testing.T, addr, bundleFile, tokenFile string, ttl time.Duration, tweak func(*Config)) *runningAgent {
	t.Helper()
	dir := t.TempDir()
	ra := &runningAgent{logs: &logBuffer{}, done: make(chan error, 1)}
	ra.cfg = Config{
		IssuerAddress: addr, CABundleFile: bundleFile, TokenFile: tokenFile, TTL: ttl,
		SDSSocket: filepath.Join(dir, "sds", "socket"), WorkloadSocket: filepath.Join(dir, "spiffe", "socket"),
		OutputDir: filepath.Join(dir, "out"), HealthAddr: "127.0.0.1:0", Logger: ra.logs.logger(),
	}
	if tweak != nil {
		tweak(&ra.cfg)
	}
	var err error
	if ra.Agent, err = New(ra.cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra.cancel = cancel
	go func() { ra.done <- ra.Run(ctx) }()
	t.Cleanup(func() { ra.stop(t) })
	return ra
}

// stop cancels Run and waits for it to return nil.
func (ra *runningAgent) stop(t *testing.T) {
	t.Helper()
	if ra.cancel == nil {
		return
	}
	ra.cancel()
	ra.cancel = nil
	select {
	case err := <-ra.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after cancel")
	}
}

func (ra *runningAgent) readyz(t *testing.T) (int, string) {
	t.Helper()
	return testkit.GetText(t, "http://"+ra.boundHealthAddr()+"/readyz")
}

func TestAgentWithRealIssuer(t *testing.T) {
	ti := newTestIssuer(t)
	ra := runAgent(t, ti, 2*time.Second)

	def := subscribe(t, envoy(t, ra.cfg.SDSSocket, "sidecar~10.0.0.1~web-1.default~default.svc.cluster.local"), ResourceDefault)
	first := next(t, def)
	inters := x509.NewCertPool()
	inters.AddCert(first.Chain[1])
	if _, err := first.Chain[0].Verify(x509.VerifyOptions{Roots: ti.tree.Bundle.Pool(), Intermediates: inters}); err != nil {
		t.Errorf("served chain does not verify to the issuer's root: %v", err)
	}
	if got := first.Chain[0].URIs[0].String(); got != webID.String() {
		t.Errorf("served identity %s, want %s", got, webID)
	}
	if code, body := ra.readyz(t); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+ra.cfg.WorkloadSocket)))
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	if svid, err := source.GetX509SVID(); err != nil || svid.ID != webID {
		t.Fatalf("Workload API: %v %v", svid, err)
	}

	// A 2 s certificate is renewed after about one second: Envoy gets a
	// push and the X509Source an update, without asking.
	second := next(t, def)
	if second.Version == first.Version || second.Chain[0].Equal(first.Chain[0]) {
		t.Errorf("second response repeats serial %s", first.Version)
	}
	select {
	case <-source.Updated():
	case <-ctx.Done():
		t.Fatal("X509Source saw no rotation")
	}

	for path, want := range map[string]os.FileMode{ra.cfg.SDSSocket: 0o600, ra.cfg.WorkloadSocket: 0o600, filepath.Join(ra.cfg.OutputDir, keyFile): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}

	ra.stop(t)
	rctx, rcancel := context.WithTimeout(context.Background(), waitTimeout)
	defer rcancel()
	for {
		if _, err := def.Recv(rctx); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("SDS stream after shutdown: %v, want a clean end (io.EOF)", err)
			}
			break
		}
	}
	for _, path := range []string{ra.cfg.SDSSocket, ra.cfg.WorkloadSocket} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s still there after shutdown: %v", path, err)
		}
	}
	if strings.Contains(ra.logs.String(), "PRIVATE KEY") {
		t.Error("key material in the log")
	}
}

func TestAgentSurvivesIssuerRestart(t *testing.T) {
	ti := newTestIssuer(t)
	ra := runAgent(t, ti, 4*time.Second)
	def := subscribe(t, envoy(t, ra.cfg.SDSSocket, "node"), ResourceDefault)
	first := next(t, def)

	ti.stop(t)
	// The renewal at about 2 s fails; the agent keeps serving the
	// certificate it has, which is valid until about 4 s.
	ra.logs.waitFor(t, "certificate renewal failed", `"expired":false`)
	if err := ra.ready(); err != nil {
		t.Errorf("not ready while the certificate is valid: %v", err)
	}
	ti.start(t)
	second := next(t, def)
	if second.Chain[0].Equal(first.Chain[0]) {
		t.Error("no new certificate after the issuer came back")
	}
	if err := ra.ready(); err != nil {
		t.Errorf("not ready after recovery: %v", err)
	}
}

func TestAgentNotReadyWhenIssuerUnreachablePastExpiry(t *testing.T) {
	ti := newTestIssuer(t)
	ra := runAgent(t, ti, time.Second)
	def := subscribe(t, envoy(t, ra.cfg.SDSSocket, "node"), ResourceDefault)
	first := next(t, def)
	ti.stop(t)
	ra.logs.waitFor(t, "certificate renewal failed", `"expired":true`)
	code, body := ra.readyz(t)
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz after expiry: %d %q, want 503", code, body)
	}
	for _, want := range []string{"not ready: certificate: " + webID.String(), first.Version, "expired at", "last renewal attempt", "Unavailable"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz body %q does not say %q", body, want)
		}
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t,
		&Config{}, &Config{IssuerAddress: "issuer:8443", CABundleFile: "ca.pem", TokenFile: "token", OutputDir: t.TempDir()},
		&managerConfig{}, &managerConfig{TokenFile: "token", CABundleFile: "ca.pem", TTL: time.Hour},
		&bundleWatcherConfig{}, &bundleWatcherConfig{RetryMin: time.Minute, RetryMax: time.Second},
		&workloadConfig{}, &sdsConfig{})
}
