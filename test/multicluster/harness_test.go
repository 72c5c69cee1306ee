package multicluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/vaulttest"
)

// meshcaBin is the binary under test: $MESHCA_BIN, or built by TestMain.
var meshcaBin string

func TestMain(m *testing.M) { harness.Main(m, "multicluster", &meshcaBin, vaulttest.StopShared) }

// start starts the binary under test (see harness.Start).
func start(t *testing.T, name string, args ...string) *harness.Proc {
	t.Helper()
	return harness.Start(t, meshcaBin, name, args...)
}

// run runs a one-shot meshca command and returns its stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return harness.Run(meshcaBin, args...)
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rootHost is the root's serving name. Issuers serve under 127.0.0.1 and
// localhost (the root allows them those names); no issuer's intermediate
// may vouch for the root's names or a parent domain of them, so the root
// has a name of its own, outside localhost.
const rootHost = "meshca-root.internal"

// rootProc is a running `meshca root serve`.
type rootProc struct {
	*harness.Proc
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
	r := &rootProc{Dir: dir, Addr: testkit.FreeAddr(t), Socket: filepath.Join(dir, "admin.sock"), name: name}
	cfg := harness.WriteFile(t, filepath.Join(t.TempDir(), "root.yaml"), fmt.Sprintf("dataDir: %s\nlisten: %s\nadminSocket: %s\nhosts: [%q]\nissuerServingNames: [\"127.0.0.1\", \"localhost\"]\n%s",
		dir, r.Addr, r.Socket, rootHost, body))
	r.config = cfg
	r.restart(t)
	return r
}

// restart starts the root (again) on the same config, data and address.
func (r *rootProc) restart(t *testing.T) {
	t.Helper()
	r.Proc = start(t, cmp.Or(r.name, "root"), "root", "serve", "--config", r.config, "--log-level", "debug")
	r.WaitListening(t, r.Addr)
	r.WaitFor(t, "bundle.pem", harness.StartTimeout, func() bool { _, err := os.Stat(r.BundlePath()); return err == nil })
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

// joinToken registers cluster with td, with args added to the flags of
// `cluster add`, and returns a file holding a token.
func (r *rootProc) joinToken(t *testing.T, cluster, td string, args ...string) string {
	t.Helper()
	var resp struct {
		JoinToken string `json:"join_token"`
	}
	if err := r.admin(t, &resp, append([]string{"cluster", "add", cluster, "--trust-domain", td}, args...)...); err != nil {
		t.Fatal(err)
	}
	if resp.JoinToken == "" {
		t.Fatal("cluster add printed no join token")
	}
	return harness.WriteFile(t, filepath.Join(t.TempDir(), cluster+"-token"), resp.JoinToken+"\n")
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
	*harness.Proc
	Dir, Addr, Cluster, TrustDomain, config string
}

// startIssuer enrols cluster/td with r and serves with the dev attestor.
func startIssuer(t *testing.T, r *rootProc, cluster, td, extra string) *issuerProc {
	t.Helper()
	token := r.joinToken(t, cluster, td)
	is := &issuerProc{Dir: t.TempDir(), Addr: testkit.FreeAddr(t), Cluster: cluster, TrustDomain: td}
	cfg := harness.WriteFile(t, filepath.Join(t.TempDir(), cluster+".yaml"), fmt.Sprintf(`dataDir: %s
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
	is.Proc = start(t, "issuer "+is.Cluster, "issuer", "serve", "--config", is.config, "--log-level", "debug")
	is.WaitListening(t, is.Addr)
}

// workload is a `meshca agent` for one service account and a go-spiffe
// X509Source on its Workload API socket.
type workload struct {
	*harness.Proc
	ID     spiffeid.ID
	Source *workloadapi.X509Source
	Socket string
	// SDSSocket is the agent's Envoy SDS socket.
	SDSSocket string
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
	tokenFile := harness.WriteFile(t, filepath.Join(dir, "token"), tokenOut)
	socket := filepath.Join(dir, "agent.sock")
	w := &workload{ID: spiffeid.RequireFromString(fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", is.TrustDomain, ns, sa)), Socket: socket,
		SDSSocket: filepath.Join(dir, "sds.sock")}
	w.Proc = start(t, "agent "+w.ID.String(), "agent", "--issuer", is.Addr, "--server-name", "localhost", "--ca-bundle", caBundle,
		"--token-file", tokenFile, "--workload-socket", socket, "--sds-socket", w.SDSSocket, "--health-addr", "", "--ttl", ttl.String(),
		"--log-level", "debug")
	w.WaitFor(t, "workload socket", harness.StartTimeout, func() bool { _, err := os.Stat(socket); return err == nil })
	ctx, cancel := context.WithTimeout(context.Background(), harness.StartTimeout)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	if err != nil {
		t.Fatalf("X509Source for %s: %v\n%s", w.ID, err, w.Output())
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

// echoServer serves serveEcho over TLS with cfg on a loopback port until the
// end of the test, and returns its address.
func echoServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go serveEcho(lis)
	return lis.Addr().String()
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

func mustTD(name string) spiffeid.TrustDomain { return spiffeid.RequireTrustDomainFromString(name) }
