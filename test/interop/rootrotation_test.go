package interop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Lifetimes short enough for a whole root rotation in a few minutes, and
// chosen so that one workload meets the other's certificate under the new
// root while its own ROOTCA still holds the old root alone: istio-agent
// replaces ROOTCA only when it renews its certificate, at half-life
// (SECRET_GRACE_PERIOD_RATIO, default 0.5). The client renews every few
// seconds; the server asks for leaves as long as an intermediate, and the
// rotation starts right after it renewed, so it renews next well after the
// new root has become active and the client has moved under it. The old
// root retires one intermediate life after its last intermediate.
const (
	rotationPropagation = 3 * time.Second
	rotationInterTTL    = 2 * time.Minute
	clientLeafTTL       = 10 * time.Second
	serverLeafTTL       = rotationInterTTL
	// serverLeftBeforeRotation is how much life the server's certificate
	// must have left when the rotation starts: it renews at half of it.
	serverLeftBeforeRotation = 70 * time.Second
	// rootHost is the root's serving name, outside the names issuers may
	// serve under.
	rootHost = "meshca-root.internal"
)

// rootServer is a running `meshca root serve` with file keys and SQLite in
// its data dir.
type rootServer struct {
	dir, addr, socket, bin string
	proc                   *proc
}

func (r *rootServer) bundlePath() string { return filepath.Join(r.dir, "bundle.pem") }

func startRootServer(t *testing.T, bin string) *rootServer {
	t.Helper()
	return startRootServerWith(t, bin, "")
}

// startRootServerWith starts the root with extra appended to its
// configuration.
func startRootServerWith(t *testing.T, bin, extra string) *rootServer {
	t.Helper()
	r := &rootServer{dir: t.TempDir(), bin: bin}
	r.addr = net.JoinHostPort("127.0.0.1", freePort(t))
	r.socket = filepath.Join(r.dir, "admin.sock")
	cfg := filepath.Join(t.TempDir(), "root.yaml")
	writeFile(t, cfg, fmt.Appendf(nil, `dataDir: %s
listen: %s
adminSocket: %s
hosts: [%q]
issuerServingNames: ["127.0.0.1", "localhost"]
intermediateTTL: %s
rotation:
  auto: false
  propagationDelay: %s
%s`, r.dir, r.addr, r.socket, rootHost, rotationInterTTL, rotationPropagation, extra), 0o600)
	r.proc = startProc(t, "meshca root", exec.Command(bin, "root", "serve", "--config", cfg))
	waitFor(t, r.proc, "the root serving with bundle.pem", func() bool {
		_, ok := readBundle(r.bundlePath())
		return ok && canDial(r.addr)
	})
	return r
}

// admin runs `meshca admin -o json ARGS` on the root's socket and decodes
// its output into out (when not nil).
func (r *rootServer) admin(t *testing.T, out any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, append([]string{"admin", "--socket", r.socket, "-o", "json"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("meshca admin %v: %v\n%s", args, err, stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout, out); err != nil {
			t.Fatalf("meshca admin %v: decode %q: %v", args, stdout, err)
		}
	}
}

type rootListing struct {
	SHA256 string `json:"sha256"`
	State  string `json:"state"`
}

func (r *rootServer) roots(t *testing.T) []rootListing {
	t.Helper()
	var resp struct {
		Roots []rootListing `json:"roots"`
	}
	r.admin(t, &resp, "root", "list")
	return resp.Roots
}

// issuerServer is a running `meshca issuer serve` enrolled with a root,
// attesting dev tokens (minted with `meshca dev token --data-dir dir`).
type issuerServer struct {
	dir, port string
	proc      *proc
}

func startIssuerServer(t *testing.T, bin string, root *rootServer, cluster string) *issuerServer {
	t.Helper()
	var added struct {
		JoinToken string `json:"join_token"`
	}
	root.admin(t, &added, "cluster", "add", cluster, "--trust-domain", trustDomain)
	tokenFile := filepath.Join(t.TempDir(), "join-token")
	writeFile(t, tokenFile, []byte(added.JoinToken+"\n"), 0o600)
	is := &issuerServer{dir: t.TempDir(), port: freePort(t)}
	cfg := filepath.Join(t.TempDir(), "issuer.yaml")
	writeFile(t, cfg, fmt.Appendf(nil, `dataDir: %s
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
`, is.dir, net.JoinHostPort("127.0.0.1", is.port), trustDomain, cluster, root.addr, rootHost, root.bundlePath(), tokenFile, cluster), 0o600)
	is.proc = startProc(t, "meshca issuer", exec.Command(bin, "issuer", "serve", "--config", cfg))
	waitFor(t, is.proc, "the issuer serving", func() bool { return canDial(net.JoinHostPort("127.0.0.1", is.port)) })
	return is
}

// waitFor polls cond until startTimeout, failing if p exits meanwhile.
func waitFor(t *testing.T, p *proc, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for !cond() {
		p.failIfExited(t)
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v\n%s", what, startTimeout, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// workloadView follows one pilot-agent's `default` and `ROOTCA` over SDS,
// each on its own stream as Envoy subscribes, keeping the latest of each.
type workloadView struct {
	name string
	pa   *pilotAgent

	mu      sync.Mutex
	chain   []*x509.Certificate
	keyPair *tls.Certificate
	roots   []*x509.Certificate
	serials map[string]bool
	err     error
}

func watchWorkload(t *testing.T, ctx context.Context, name string, pa *pilotAgent) *workloadView {
	t.Helper()
	w := &workloadView{name: name, pa: pa, serials: map[string]bool{}}
	sds := dialSDS(t, pa.sdsSocket)
	for _, resource := range []string{"default", "ROOTCA"} {
		s, err := sds.subscribe(ctx, resource)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				secret, err := s.next()
				if err != nil {
					if ctx.Err() == nil {
						w.fail(err)
					}
					return
				}
				if err := w.take(resource, secret.GetTlsCertificate().GetCertificateChain().GetInlineBytes(),
					secret.GetTlsCertificate().GetPrivateKey().GetInlineBytes(),
					secret.GetValidationContext().GetTrustedCa().GetInlineBytes()); err != nil {
					w.fail(err)
					return
				}
			}
		}()
	}
	return w
}

func (w *workloadView) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = fmt.Errorf("%s: %w", w.name, err)
	}
}

func (w *workloadView) take(resource string, chainPEM, keyPEM, rootsPEM []byte) error {
	if resource == "ROOTCA" {
		roots, err := parsePEMCertificates(rootsPEM)
		if err != nil {
			return fmt.Errorf("ROOTCA: %w", err)
		}
		w.mu.Lock()
		w.roots = roots
		w.mu.Unlock()
		return nil
	}
	pair, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("default: %w", err)
	}
	chain, err := parsePEMCertificates(chainPEM)
	if err != nil {
		return fmt.Errorf("default: %w", err)
	}
	w.mu.Lock()
	w.chain, w.keyPair = chain, &pair
	w.serials[chain[0].SerialNumber.String()] = true
	w.mu.Unlock()
	return nil
}

// snapshot is one workload's secrets at one moment.
type snapshot struct {
	chain   []*x509.Certificate
	keyPair *tls.Certificate
	roots   []*x509.Certificate
}

func (w *workloadView) snapshot() (snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return snapshot{chain: w.chain, keyPair: w.keyPair, roots: w.roots}, w.err
}

func (w *workloadView) renewals() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.serials)
}

func fingerprintOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// leafRoot is the fingerprint of the self-signed root in chain (as
// meshca sends it: leaf, intermediate, cross certificates, roots) whose key
// signed the cluster intermediate; "" when there is none.
func leafRoot(chain []*x509.Certificate) string {
	for _, c := range chain[1:] {
		if !c.IsCA || !c.MaxPathLenZero {
			continue
		}
		for _, r := range chain[1:] {
			if r.CheckSignatureFrom(r) == nil && bytes.Equal(c.RawIssuer, r.RawSubject) && c.CheckSignatureFrom(r) == nil {
				return fingerprintOf(r)
			}
		}
	}
	return ""
}

func fingerprints(cs []*x509.Certificate) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, fingerprintOf(c))
	}
	slices.Sort(out)
	return out
}

// handshake runs mutual TLS in memory: the client presents client's
// default certificate and trusts clientRoots, the server likewise. Each
// side verifies the other's chain with the chain's own intermediates, for
// its usage, as Envoy's SPIFFE validation does (the leaves carry no DNS
// name).
func handshake(client, server snapshot) error {
	verify := func(roots []*x509.Certificate, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no peer certificate")
			}
			return verifyLeaf(cs.PeerCertificates, roots, usage)
		}
	}
	cconn, sconn := net.Pipe()
	defer cconn.Close()
	defer sconn.Close()
	_ = cconn.SetDeadline(time.Now().Add(10 * time.Second))
	_ = sconn.SetDeadline(time.Now().Add(10 * time.Second))
	srv := tls.Server(sconn, &tls.Config{Certificates: []tls.Certificate{*server.keyPair}, ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: verify(server.roots, x509.ExtKeyUsageClientAuth), MinVersion: tls.VersionTLS12})
	cli := tls.Client(cconn, &tls.Config{Certificates: []tls.Certificate{*client.keyPair}, InsecureSkipVerify: true,
		VerifyConnection: verify(client.roots, x509.ExtKeyUsageServerAuth), MinVersion: tls.VersionTLS12})
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	cerr := cli.Handshake()
	if cerr != nil {
		_ = cconn.Close()
	}
	serr := <-done
	return errors.Join(cerr, serr)
}

// rotationObserver checks, at every observation, that each workload's
// ROOTCA verifies the other's default chain and that mutual TLS between
// them succeeds both ways.
type rotationObserver struct {
	a, b         *workloadView
	observations int
	// fails counts failed checks: two verifications and two handshakes
	// per observation.
	fails                int
	crossed              int // verifications whose anchor was not the peer leaf's own root
	firstErrs            []string
	sawSingleAnchorCross bool
}

func (o *rotationObserver) observe(t *testing.T) {
	t.Helper()
	sa, errA := o.a.snapshot()
	sb, errB := o.b.snapshot()
	if err := errors.Join(errA, errB); err != nil {
		t.Fatalf("SDS: %v", err)
	}
	if sa.chain == nil || sb.chain == nil || sa.roots == nil || sb.roots == nil {
		return
	}
	o.observations++
	pairs := []struct {
		name           string
		verifier, peer snapshot
	}{{o.a.name + " verifies " + o.b.name, sa, sb}, {o.b.name + " verifies " + o.a.name, sb, sa}}
	for _, p := range pairs {
		if err := verifyLeaf(p.peer.chain, p.verifier.roots, x509.ExtKeyUsageAny); err != nil {
			o.fail(fmt.Sprintf("%s: ROOTCA %s, peer chain %s: %v", p.name, subjects(p.verifier.roots), subjects(p.peer.chain), err))
			continue
		}
		if own := leafRoot(p.peer.chain); own != "" && !slices.Contains(fingerprints(p.verifier.roots), own) {
			o.crossed++
			if len(p.verifier.roots) == 1 {
				o.sawSingleAnchorCross = true
			}
		}
	}
	if err := handshake(sa, sb); err != nil {
		o.fail(fmt.Sprintf("mTLS %s -> %s: %v", o.a.name, o.b.name, err))
	}
	if err := handshake(sb, sa); err != nil {
		o.fail(fmt.Sprintf("mTLS %s -> %s: %v", o.b.name, o.a.name, err))
	}
}

func (o *rotationObserver) fail(msg string) {
	o.fails++
	if len(o.firstErrs) < 5 {
		o.firstErrs = append(o.firstErrs, msg)
	}
}

// rotationRun observes two workloads (obs) every 250 ms while a root
// rotates, keeping each pilot-agent's root-cert.pem equal to the root's
// bundle.pem as the istio-ca-root-cert ConfigMap's mount would.
type rotationRun struct {
	t          *testing.T
	obs        *rotationObserver
	bundlePath string
	agents     []*pilotAgent
	// procs must keep running; logs are printed when a wait times out.
	procs, logs []*proc
}

func (r *rotationRun) mirrorRoots() {
	bundle, err := os.ReadFile(r.bundlePath)
	if err != nil || len(bundle) == 0 {
		return
	}
	for _, pa := range r.agents {
		path := filepath.Join(pa.dir, istioRootCertPath)
		if cur, _ := os.ReadFile(path); !bytes.Equal(cur, bundle) {
			writeFile(r.t, path+".tmp", bundle, 0o644)
			if err := os.Rename(path+".tmp", path); err != nil {
				r.t.Fatal(err)
			}
		}
	}
}

// until observes every 250 ms until cond holds, failing after timeout.
func (r *rotationRun) until(what string, timeout time.Duration, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mirrorRoots()
		r.obs.observe(r.t)
		if cond() {
			r.t.Logf("%s (%d observations so far, %d failures)", what, r.obs.observations, r.obs.fails)
			return
		}
		for _, p := range r.procs {
			p.failIfExited(r.t)
		}
		if time.Now().After(deadline) {
			var out []string
			for _, p := range r.logs {
				out = append(out, p.output())
			}
			r.t.Fatalf("no %s within %v; failures %d: %s\n%s", what, timeout, r.obs.fails, strings.Join(r.obs.firstErrs, "\n"),
				strings.Join(out, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestPilotAgentsThroughRootRotation runs two Istio pilot-agents (no istiod)
// against a meshca issuer under `meshca root serve`, and drives a full root
// rotation: prepared → active → retiring → gone. At every observation each
// workload's ROOTCA (as istio-agent serves it to Envoy) verifies the other
// workload's default chain, and mutual TLS with those secrets succeeds both
// ways; at the end ROOTCA holds the new root alone. Each pilot-agent renews
// (SECRET_TTL: the client every few seconds, the server at most every minute), and its root-cert.pem follows the root's
// bundle.pem as the istio-ca-root-cert ConfigMap's mount would.
func TestPilotAgentsThroughRootRotation(t *testing.T) {
	agentBin := pilotAgentBinary(t)
	bin := meshcaBinary(t)
	root := startRootServer(t, bin)
	is := startIssuerServer(t, bin, root, "east")
	oldRoot := root.roots(t)
	if len(oldRoot) != 1 {
		t.Fatalf("root lists %d roots at start, want 1", len(oldRoot))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var views []*workloadView
	var agents []*pilotAgent
	for sa, ttl := range map[string]time.Duration{"client": clientLeafTTL, "server": serverLeafTTL} {
		token := mintToken(t, bin, is.dir, namespace, sa, istioAudience)
		pa := startPilotAgentFor(t, agentBin, pilotAgentSpec{caPort: is.port, bundlePath: root.bundlePath(), token: token,
			serviceAccount: sa, env: []string{"SECRET_TTL=" + ttl.String()}})
		agents = append(agents, pa)
		views = append(views, watchWorkload(t, ctx, sa, pa))
	}
	obs := &rotationObserver{}
	run := &rotationRun{t: t, obs: obs, bundlePath: root.bundlePath(), agents: agents,
		procs: []*proc{root.proc, is.proc, agents[0].proc, agents[1].proc}, logs: []*proc{is.proc, root.proc}}
	observeUntil := run.until
	rootsOf := func(v *workloadView) []string {
		s, _ := v.snapshot()
		return fingerprints(s.roots)
	}
	chainRoot := func(v *workloadView) string {
		s, _ := v.snapshot()
		if s.chain == nil {
			return ""
		}
		return leafRoot(s.chain)
	}
	slices.SortFunc(views, func(x, y *workloadView) int { return strings.Compare(x.name, y.name) }) // client, server
	obs.a, obs.b = views[0], views[1]
	observeUntil("both workloads have default and ROOTCA", startTimeout, func() bool { return obs.observations > 0 })
	observeUntil("the server holding a fresh certificate", 2*rotationInterTTL, func() bool {
		s, _ := views[1].snapshot()
		return time.Until(s.chain[0].NotAfter) >= serverLeftBeforeRotation
	})

	root.admin(t, nil, "root", "rotate")
	var newRoot string
	for _, r := range root.roots(t) {
		if r.SHA256 != oldRoot[0].SHA256 {
			newRoot = r.SHA256
			if r.State != "prepared" {
				t.Fatalf("new root is %s, want prepared", r.State)
			}
		}
	}
	state := func(fp string) string {
		for _, r := range root.roots(t) {
			if r.SHA256 == fp {
				return r.State
			}
		}
		return "gone"
	}
	observeUntil("the new root active, the old retiring", rotationPropagation+time.Minute, func() bool {
		return state(newRoot) == "active" && state(oldRoot[0].SHA256) == "retiring"
	})
	observeUntil("both workloads' certificates under the new root", 2*time.Minute, func() bool {
		return chainRoot(views[0]) == newRoot && chainRoot(views[1]) == newRoot
	})
	observeUntil("the old root gone", 3*rotationInterTTL, func() bool { return state(oldRoot[0].SHA256) == "gone" })
	observeUntil("ROOTCA holding the new root alone in both workloads", 2*time.Minute, func() bool {
		return slices.Equal(rootsOf(views[0]), []string{newRoot}) && slices.Equal(rootsOf(views[1]), []string{newRoot})
	})
	// A few more observations on the new root alone.
	end := time.Now().Add(5 * time.Second)
	observeUntil("the end", time.Minute, func() bool { return time.Now().After(end) })

	t.Logf("%d observations, %d failures, %d verifications through a cross certificate (a single-anchor ROOTCA: %v); renewals: %s %d, %s %d",
		obs.observations, obs.fails, obs.crossed, obs.sawSingleAnchorCross, views[0].name, views[0].renewals(), views[1].name, views[1].renewals())
	if obs.fails != 0 {
		t.Fatalf("%d checks failed in %d observations (four checks each); first:\n%s", obs.fails, obs.observations, strings.Join(obs.firstErrs, "\n"))
	}
	if !obs.sawSingleAnchorCross {
		t.Error("no observation had a workload whose ROOTCA held one root verify a peer certificate under the other: " +
			"the cross certificates were never put to the test")
	}
	for _, v := range views {
		if n := v.renewals(); n < 4 {
			t.Errorf("%s: %d certificates seen, want pilot-agent to have renewed through the rotation", v.name, n)
		}
	}
	cancel()
	for _, pa := range agents {
		pa.stopClean(t)
	}
}
