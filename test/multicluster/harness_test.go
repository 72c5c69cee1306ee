package multicluster

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshca/meshca/test/vaulttest"
)

const (
	startTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second
)

// meshcaBin is the binary under test: $MESHCA_BIN, or built by TestMain.
var meshcaBin string

func TestMain(m *testing.M) {
	code := 1
	dir, err := os.MkdirTemp("", "meshca-multicluster-")
	if err == nil {
		if meshcaBin, err = binary(dir); err == nil {
			code = m.Run()
		}
		os.RemoveAll(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "multicluster:", err)
	}
	vaulttest.StopShared()
	os.Exit(code)
}

func binary(dir string) (string, error) {
	if env := os.Getenv("MESHCA_BIN"); env != "" {
		abs, err := filepath.Abs(env)
		if err != nil {
			return "", err
		}
		_, err = os.Stat(abs)
		return abs, err
	}
	bin := filepath.Join(dir, "meshca")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/meshca/meshca/cmd/meshca")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build meshca: %w", err)
	}
	return bin, nil
}

// proc is a running meshca process. Cleanup stops it with SIGTERM and
// checks that its log never held key material or tokens.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(meshcaBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.out.String())
		}
		for _, secret := range []string{"PRIVATE KEY", "eyJ", "mjt1."} {
			if strings.Contains(p.out.String(), secret) {
				t.Errorf("%s logged secret material (%q)", name, secret)
			}
		}
	})
	return p
}

// stop sends SIGTERM and waits; it is a no-op once the process has exited.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within %v of SIGTERM", p.name, stopTimeout)
	}
}

// waitFor polls cond until it holds, the process exits or timeout passes.
func (p *proc) waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) while waiting for %s\n%s", p.name, p.err, what, p.out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %v\n%s", p.name, what, timeout, p.out.String())
		}
	}
}

func (p *proc) waitListening(t *testing.T, addr string) {
	t.Helper()
	p.waitFor(t, "listener on "+addr, startTimeout, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// run runs a one-shot meshca command and returns its stdout, failing the
// test on a non-zero exit unless allowFail.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, meshcaBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("meshca %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rootHost is the root's serving name. Issuers serve under 127.0.0.1 and
// localhost (the root allows them those names); no issuer's intermediate
// may vouch for the root's names or a parent domain of them, so the root
// has a name of its own, outside localhost.
const rootHost = "meshca-root.internal"

// rootProc is a running `meshca root serve`.
type rootProc struct {
	*proc
	Dir, Addr, Socket, config string
	// name labels the process in the test log; empty means "root".
	name string
}

// BundlePath is the PEM bundle the root keeps in its data dir.
func (r *rootProc) BundlePath() string { return filepath.Join(r.Dir, "bundle.pem") }

// startRoot starts a root with the YAML body (dataDir, listen and
// adminSocket are added) and waits until it serves.
func startRoot(t *testing.T, body string) *rootProc {
	t.Helper()
	return startNamedRoot(t, "root", body)
}

// startNamedRoot is startRoot for a root named name in the test log (one
// of several replicas).
func startNamedRoot(t *testing.T, name, body string) *rootProc {
	t.Helper()
	dir := t.TempDir()
	r := &rootProc{Dir: dir, Addr: freeAddr(t), Socket: filepath.Join(dir, "admin.sock"), name: name}
	cfg := writeFile(t, filepath.Join(t.TempDir(), "root.yaml"), fmt.Sprintf("dataDir: %s\nlisten: %s\nadminSocket: %s\nhosts: [%q]\nissuerServingNames: [\"127.0.0.1\", \"localhost\"]\n%s",
		dir, r.Addr, r.Socket, rootHost, body))
	r.config = cfg
	r.restart(t)
	return r
}

// restart starts the root (again) on the same config, data and address.
func (r *rootProc) restart(t *testing.T) {
	t.Helper()
	r.proc = start(t, cmp.Or(r.name, "root"), "root", "serve", "--config", r.config, "--log-level", "debug")
	r.waitListening(t, r.Addr)
	r.waitFor(t, "bundle.pem", startTimeout, func() bool { _, err := os.Stat(r.BundlePath()); return err == nil })
}

// admin runs `meshca admin -o json ARGS` against r and decodes the output
// into out (when non-nil).
func (r *rootProc) admin(t *testing.T, out any, args ...string) error {
	t.Helper()
	stdout, err := run(t, append([]string{"admin", "--socket", r.Socket, "-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			return fmt.Errorf("admin %v: decode %q: %w", args, stdout, err)
		}
	}
	return nil
}

// joinToken registers cluster with td and returns a file holding a token.
func (r *rootProc) joinToken(t *testing.T, cluster, td string) string {
	t.Helper()
	var resp struct {
		JoinToken string `json:"join_token"`
	}
	if err := r.admin(t, &resp, "cluster", "add", cluster, "--trust-domain", td); err != nil {
		t.Fatal(err)
	}
	if resp.JoinToken == "" {
		t.Fatal("cluster add printed no join token")
	}
	return writeFile(t, filepath.Join(t.TempDir(), cluster+"-token"), resp.JoinToken+"\n")
}

type rootInfo struct {
	SHA256 string `json:"sha256"`
	State  string `json:"state"`
}

func (r *rootProc) roots(t *testing.T) []rootInfo {
	t.Helper()
	var resp struct {
		Roots []rootInfo `json:"roots"`
	}
	if err := r.admin(t, &resp, "root", "list"); err != nil {
		t.Fatal(err)
	}
	return resp.Roots
}

// issuerProc is a running `meshca issuer serve` under a root.
type issuerProc struct {
	*proc
	Dir, Addr, Cluster, TrustDomain, config string
}

// startIssuer enrols cluster/td with r and serves with the dev attestor.
func startIssuer(t *testing.T, r *rootProc, cluster, td, extra string) *issuerProc {
	t.Helper()
	token := r.joinToken(t, cluster, td)
	is := &issuerProc{Dir: t.TempDir(), Addr: freeAddr(t), Cluster: cluster, TrustDomain: td}
	cfg := writeFile(t, filepath.Join(t.TempDir(), cluster+".yaml"), fmt.Sprintf(`dataDir: %s
listen: %s
trustDomain: %s
cluster: %s
hosts: ["127.0.0.1", "localhost"]
leafMinTTL: 5s
upstream:
  address: %s
  serverName: %s
  bundleFile: %s
  joinTokenFile: %s
clusters:
  - name: %s
    attestor: dev
%s`, is.Dir, is.Addr, td, cluster, r.Addr, rootHost, r.BundlePath(), token, cluster, extra))
	is.config = cfg
	is.restart(t)
	return is
}

// restart starts the issuer (again) on the same config and data.
func (is *issuerProc) restart(t *testing.T) {
	t.Helper()
	is.proc = start(t, "issuer "+is.Cluster, "issuer", "serve", "--config", is.config, "--log-level", "debug")
	is.waitListening(t, is.Addr)
}

// workload is a `meshca agent` for one service account and a go-spiffe
// X509Source on its Workload API socket.
type workload struct {
	*proc
	ID     spiffeid.ID
	Source *workloadapi.X509Source
	Socket string
	// CRLs, when set (watchCRLs), makes probes check peers against the
	// CRLs this workload's agent delivers.
	CRLs *crlWatch
}

// watchCRLs makes w honour the CRLs its agent delivers.
func (w *workload) watchCRLs(t *testing.T) { w.CRLs = watchCRLs(t, w.Socket) }

// serverConfig and clientConfig are go-spiffe mTLS configs for w that
// authorize peer, checking CRLs when w watches them.
func (w *workload) serverConfig(peer spiffeid.ID) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(w.Source, w.Source, tlsconfig.AuthorizeID(peer))
	if w.CRLs != nil {
		cfg.VerifyPeerCertificate = w.CRLs.verifier(w.Source, cfg.VerifyPeerCertificate)
	}
	return cfg
}

func (w *workload) clientConfig(peer spiffeid.ID) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(w.Source, w.Source, tlsconfig.AuthorizeID(peer))
	if w.CRLs != nil {
		cfg.VerifyPeerCertificate = w.CRLs.verifier(w.Source, cfg.VerifyPeerCertificate)
	}
	return cfg
}

func startWorkload(t *testing.T, is *issuerProc, caBundle, ns, sa string, ttl time.Duration) *workload {
	t.Helper()
	dir := t.TempDir()
	tokenOut := mustRun(t, "dev", "token", "--data-dir", is.Dir, "--namespace", ns, "--service-account", sa, "--ttl", "24h")
	tokenFile := writeFile(t, filepath.Join(dir, "token"), tokenOut)
	socket := filepath.Join(dir, "agent.sock")
	w := &workload{ID: spiffeid.RequireFromString(fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", is.TrustDomain, ns, sa)), Socket: socket}
	w.proc = start(t, "agent "+w.ID.String(), "agent", "--issuer", is.Addr, "--server-name", "localhost", "--ca-bundle", caBundle,
		"--token-file", tokenFile, "--workload-socket", socket, "--health-addr", "", "--ttl", ttl.String(), "--log-level", "debug")
	w.waitFor(t, "workload socket", startTimeout, func() bool { _, err := os.Stat(socket); return err == nil })
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	if err != nil {
		t.Fatalf("X509Source for %s: %v\n%s", w.ID, err, w.out.String())
	}
	t.Cleanup(func() { src.Close() })
	w.Source = src
	return w
}

// mtlsProbe runs a TLS server as one workload and dials it as another,
// with a fresh handshake every interval, counting successes and failures.
// Each side checks the other's SPIFFE ID and trusts only what its own agent
// serves (its own bundle and federated ones).
type mtlsProbe struct {
	mu       sync.Mutex
	ok, fail int
	errs     []string
	stop     chan struct{}
	done     chan struct{}
}

func startProbe(t *testing.T, server, client *workload, interval time.Duration) *mtlsProbe {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server.serverConfig(client.ID))
	if err != nil {
		t.Fatal(err)
	}
	go serveEcho(lis)
	p := &mtlsProbe{stop: make(chan struct{}), done: make(chan struct{})}
	clientCfg := client.clientConfig(server.ID)
	go func() {
		defer close(p.done)
		defer lis.Close()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			err := exchange(lis.Addr().String(), clientCfg)
			p.mu.Lock()
			if err != nil {
				p.fail++
				if len(p.errs) < 20 {
					p.errs = append(p.errs, time.Now().Format(time.TimeOnly)+" "+err.Error())
				}
			} else {
				p.ok++
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.halt)
	return p
}

// serveEcho answers each connection's 4-byte ping until lis is closed.
func serveEcho(lis net.Listener) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			if _, err := c.Read(buf); err == nil {
				_, _ = c.Write(buf)
			}
		}()
	}
}

// exchange does one handshake and one round trip.
func exchange(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return errors.New("echo mismatch")
	}
	return nil
}

func (p *mtlsProbe) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *mtlsProbe) counts() (ok, fail int, errs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ok, p.fail, append([]string(nil), p.errs...)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func mustTD(name string) spiffeid.TrustDomain { return spiffeid.RequireTrustDomainFromString(name) }
