package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// statusJSON is `meshca status -o json`: protojson with proto field names,
// 64-bit integers as strings, timestamps in RFC 3339 (time.Time refuses
// anything else).
type statusJSON struct {
	Role         string   `json:"role"`
	TrustDomain  string   `json:"trust_domain"`
	Cluster      string   `json:"cluster"`
	Upstream     string   `json:"upstream"`
	TrustDomains []string `json:"trust_domains"`
	Listen       struct {
		GRPC        string `json:"grpc_addr"`
		AdminSocket string `json:"admin_socket"`
		AdminTLS    string `json:"admin_tls_addr"`
		Metrics     string `json:"metrics_addr"`
	} `json:"listen"`
	Roots          []caCertJSON `json:"roots"`
	Intermediates  []caCertJSON `json:"intermediates"`
	BundleSequence uint64       `json:"bundle_sequence,string"`
	Clusters       []struct {
		Name          string   `json:"name"`
		TrustDomain   string   `json:"trust_domain"`
		Revoked       bool     `json:"revoked"`
		Intermediates int      `json:"intermediates"`
		DNSNames      []string `json:"dns_names"`
	} `json:"clusters"`
	Revocations int64 `json:"revocations,string"`
	Store       struct {
		Reachable bool `json:"reachable"`
	} `json:"store"`
	Audit struct {
		HeadSeq        int64  `json:"head_seq,string"`
		HeadHash       string `json:"head_hash"`
		LastCheckpoint *struct {
			Seq  int64     `json:"seq,string"`
			Hash string    `json:"hash"`
			Time time.Time `json:"time"`
		} `json:"last_checkpoint"`
	} `json:"audit"`
	Time time.Time `json:"time"`
}

type caCertJSON struct {
	SHA256    string    `json:"sha256"`
	Subject   string    `json:"subject"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	State     string    `json:"state"`
	Cluster   string    `json:"cluster"`
}

// statusOf runs `meshca status -o json` on socket and decodes it strictly.
func statusOf(t *testing.T, socket string) statusJSON {
	t.Helper()
	out, err := runCommand(t, "status", "--socket", socket, "-o", "json")
	if err != nil {
		t.Fatalf("meshca status -o json: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	var s statusJSON
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return s
}

// auditHead is the head `meshca admin audit verify` reports.
func auditHead(t *testing.T, socket string) (int64, string) {
	t.Helper()
	out, err := runCommand(t, "admin", "--socket", socket, "audit", "verify", "-o", "json")
	if err != nil {
		t.Fatalf("admin audit verify: %v", err)
	}
	var v struct {
		HeadSeq  int64  `json:"head_seq,string"`
		HeadHash string `json:"head_hash"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	return v.HeadSeq, v.HeadHash
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// bundleRoots returns the fingerprints of the roots in dir/bundle.pem.
func bundleRoots(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := trust.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range b.Roots() {
		out = append(out, fingerprint(r.Raw))
	}
	return out
}

// servedIntermediate is the fingerprint of the intermediate the issuer at
// addr presents in its TLS chain.
func servedIntermediate(t *testing.T, addr string) string {
	t.Helper()
	// Only the certificates are read; nothing is sent over the connection.
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	if len(chain) < 2 {
		t.Fatalf("issuer presented %d certificates, want leaf and intermediate", len(chain))
	}
	return fingerprint(chain[1].Raw)
}

// refuseAll attests nobody: the status tests issue nothing.
type refuseAll struct{}

func (refuseAll) Attest(context.Context, attest.Request) (attest.Identity, error) {
	return attest.Identity{}, attest.ErrUnauthenticated
}

// runIssuerStack runs a local-root issuer stack (SQLite, checkpoints every
// 50ms) on free ports until the test ends and returns its config.
func runIssuerStack(t *testing.T) stack.Config {
	t.Helper()
	dir := t.TempDir()
	serving := make(chan struct{})
	cfg := stack.Config{
		Name: "meshca issuer", TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Cluster: "east",
		DataDir: dir, Listen: testkit.FreeAddr(t), Hosts: []string{"127.0.0.1"},
		OpenStore: func(ctx context.Context, _ *store.Metrics) (stack.Store, error) {
			return sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "meshca.db")})
		},
		Checkpoint: checkpoint.DirConfig{Interval: 50 * time.Millisecond},
		Attestor:   func() (attest.Attestor, error) { return refuseAll{}, nil },
		Serving:    func(string, string) { close(serving) },
	}
	testkit.Go(t, "issuer stack", func(ctx context.Context) error { return stack.Run(ctx, cfg) })
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		t.Fatal("issuer stack not serving after 30s")
	}
	return cfg
}

// TestStatusIssuer runs `meshca status` over the admin socket of a running
// issuer stack and checks what it says against the running state: the
// served intermediate, bundle.pem, the audit head and the revocations made.
func TestStatusIssuer(t *testing.T) {
	cfg := runIssuerStack(t)
	socket := filepath.Join(cfg.DataDir, "admin.sock")
	for _, id := range []string{"spiffe://east.example/ns/a/sa/one", "spiffe://east.example/ns/a/sa/two"} {
		if _, err := runCommand(t, "admin", "--socket", socket, "revoke", "--spiffe-id", id, "--reason", "test"); err != nil {
			t.Fatalf("revoke %s: %v", id, err)
		}
	}
	seq, hash := auditHead(t, socket)
	if seq < 2 {
		t.Fatalf("audit head seq %d after two revocations", seq)
	}
	var s statusJSON
	testkit.Eventually(t, 10*time.Second, "a checkpoint of the head", func() error {
		s = statusOf(t, socket)
		if cp := s.Audit.LastCheckpoint; cp == nil || cp.Seq != seq {
			return fmt.Errorf("last checkpoint %+v, want seq %d", cp, seq)
		}
		return nil
	})
	if s.Role != "issuer" || s.TrustDomain != "east.example" || s.Cluster != "east" || s.Upstream != "" {
		t.Errorf("role %q, trust domain %q, cluster %q, upstream %q", s.Role, s.TrustDomain, s.Cluster, s.Upstream)
	}
	if s.Listen.GRPC != cfg.Listen || s.Listen.AdminSocket != socket || s.Listen.AdminTLS != "" || s.Listen.Metrics != "" {
		t.Errorf("listen %+v, want grpc %s and admin socket %s only", s.Listen, cfg.Listen, socket)
	}
	roots := bundleRoots(t, cfg.DataDir)
	if len(s.Roots) != 1 || s.Roots[0].SHA256 != roots[0] || s.Roots[0].State != "active" || !s.Roots[0].NotAfter.After(time.Now()) {
		t.Errorf("roots %+v, want the one in bundle.pem (%s), active", s.Roots, roots)
	}
	if len(s.Intermediates) == 0 || s.Intermediates[0].State != "active" ||
		s.Intermediates[0].SHA256 != servedIntermediate(t, cfg.Listen) {
		t.Errorf("intermediates %+v, want the served one first, active", s.Intermediates)
	}
	if in := s.Intermediates[0]; !in.NotAfter.After(in.NotBefore) || in.NotAfter.After(s.Roots[0].NotAfter) {
		t.Errorf("intermediate validity %v to %v, root until %v", in.NotBefore, in.NotAfter, s.Roots[0].NotAfter)
	}
	if s.BundleSequence == 0 || s.Revocations != 2 || !s.Store.Reachable || len(s.Clusters) != 0 {
		t.Errorf("bundle sequence %d, revocations %d, store reachable %v, clusters %v",
			s.BundleSequence, s.Revocations, s.Store.Reachable, s.Clusters)
	}
	if s.Audit.HeadSeq != seq || s.Audit.HeadHash != hash || s.Audit.LastCheckpoint.Hash != hash {
		t.Errorf("audit %+v, want head seq %d hash %s", s.Audit, seq, hash)
	}
	if d := time.Since(s.Time); d < 0 || d > time.Minute {
		t.Errorf("status time %v", s.Time)
	}

	out, err := runCommand(t, "status", "--socket", socket)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^role +issuer$`),
		regexp.MustCompile(`(?m)^cluster +east$`),
		regexp.MustCompile(`(?m)^grpc listen +` + regexp.QuoteMeta(cfg.Listen) + `$`),
		regexp.MustCompile(`(?m)^metrics listen +-$`),
		regexp.MustCompile(`(?m)^revocations in force +2$`),
		regexp.MustCompile(`(?m)^store +reachable$`),
		regexp.MustCompile(fmt.Sprintf(`(?m)^audit head +seq %d hash %s$`, seq, hash)),
		regexp.MustCompile(fmt.Sprintf(`(?m)^last checkpoint +seq %d hash %s at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`, seq, hash)),
		regexp.MustCompile(`(?m)^` + roots[0] + ` +active +- +` + s.Roots[0].NotAfter.UTC().Format(time.RFC3339) + ` `),
		regexp.MustCompile(`(?m)^` + s.Intermediates[0].SHA256 + ` +active `),
	} {
		if !want.MatchString(out) {
			t.Errorf("status table has no line matching %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "CLUSTER\tTRUST DOMAIN") || strings.Contains(out, "VALID INTERMEDIATES") {
		t.Errorf("issuer status lists clusters:\n%s", out)
	}
}

// runRootStack runs a root stack (file keys, SQLite, checkpoints every
// 50ms) on free ports until the test ends and returns its config.
func runRootStack(t *testing.T) root.StackConfig {
	t.Helper()
	dir := t.TempDir()
	serving := make(chan struct{})
	cfg := root.StackConfig{
		Root:    root.Config{Keys: root.FileKeys{Dir: dir}, Hosts: []string{"127.0.0.1"}},
		DataDir: dir, Listen: testkit.FreeAddr(t), MetricsListen: testkit.FreeAddr(t),
		BundleTrustDomain: spiffeid.RequireTrustDomainFromString("mesh.example"),
		OpenStore: func(ctx context.Context) (root.StackStore, error) {
			return sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "meshca.db")})
		},
		Checkpoint: checkpoint.DirConfig{Interval: 50 * time.Millisecond},
		Serving:    func(string, string) { close(serving) },
	}
	testkit.Go(t, "root stack", func(ctx context.Context) error { return root.RunStack(ctx, cfg) })
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		t.Fatal("root stack not serving after 30s")
	}
	return cfg
}

// TestStatusRoot runs `meshca status` over the admin socket of a running
// root stack with one registered cluster.
func TestStatusRoot(t *testing.T) {
	cfg := runRootStack(t)
	dir := cfg.DataDir
	socket := cfg.AdminSocketPath()
	if _, err := runCommand(t, "admin", "--socket", socket, "cluster", "add", "east", "--trust-domain", "east.example"); err != nil {
		t.Fatal(err)
	}
	seq, hash := auditHead(t, socket)
	var s statusJSON
	testkit.Eventually(t, 10*time.Second, "a checkpoint of the head and the new trust domain", func() error {
		s = statusOf(t, socket)
		if cp := s.Audit.LastCheckpoint; cp == nil || cp.Seq != seq {
			return fmt.Errorf("last checkpoint %+v, want seq %d", cp, seq)
		}
		return nil
	})
	if s.Role != "root" || s.TrustDomain != "mesh.example" || s.Cluster != "" {
		t.Errorf("role %q, trust domain %q, cluster %q", s.Role, s.TrustDomain, s.Cluster)
	}
	if s.Listen.GRPC != cfg.Listen || s.Listen.AdminSocket != socket || s.Listen.Metrics != cfg.MetricsListen {
		t.Errorf("listen %+v, want grpc %s, admin socket %s, metrics %s", s.Listen, cfg.Listen, socket, cfg.MetricsListen)
	}
	roots := bundleRoots(t, dir)
	if len(s.Roots) != 1 || s.Roots[0].SHA256 != roots[0] || s.Roots[0].State != "active" {
		t.Errorf("roots %+v, want the one in bundle.pem (%s), active", s.Roots, roots)
	}
	if len(s.Clusters) != 1 || s.Clusters[0].Name != "east" || s.Clusters[0].TrustDomain != "east.example" ||
		s.Clusters[0].Revoked || s.Clusters[0].Intermediates != 0 || len(s.Intermediates) != 0 {
		t.Errorf("clusters %+v, intermediates %+v; want east, not enrolled", s.Clusters, s.Intermediates)
	}
	if s.BundleSequence == 0 || s.Revocations != 0 || !s.Store.Reachable || s.Audit.HeadSeq != seq || s.Audit.HeadHash != hash {
		t.Errorf("bundle sequence %d, revocations %d, store %+v, audit %+v (head seq %d)",
			s.BundleSequence, s.Revocations, s.Store, s.Audit, seq)
	}

	out, err := runCommand(t, "status", "--socket", socket)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^role +root$`),
		regexp.MustCompile(`(?m)^trust domain +mesh\.example$`),
		regexp.MustCompile(`(?m)^metrics listen +` + regexp.QuoteMeta(cfg.MetricsListen) + `$`),
		regexp.MustCompile(`(?m)^revocations in force +0$`),
		regexp.MustCompile(`(?m)^CLUSTER +TRUST DOMAIN +VALID INTERMEDIATES +REVOKED +DNS NAMES$`),
		regexp.MustCompile(`(?m)^east +east\.example +0 +false +-$`),
		regexp.MustCompile(`(?m)^` + roots[0] + ` +active +- `),
	} {
		if !want.MatchString(out) {
			t.Errorf("status table has no line matching %s:\n%s", want, out)
		}
	}
}

// Without a server the command fails, naming the socket.
func TestStatusWithoutServer(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "admin.sock")
	_, err := runCommand(t, "status", "--socket", socket)
	if err == nil || !strings.Contains(err.Error(), socket) {
		t.Fatalf("status without a server: %v, want an error naming %s", err, socket)
	}
	if _, err := runCommand(t, "status", "--socket", socket, "-o", "yaml"); err == nil || !strings.Contains(err.Error(), "table or json") {
		t.Fatalf("status -o yaml: %v", err)
	}
}
