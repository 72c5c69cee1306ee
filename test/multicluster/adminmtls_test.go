package multicluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
)

const opsAdminID = "spiffe://east.example/ns/ops/sa/admin"

// TestAdminOverMTLS: a pod running as the admin's service account holds an
// X509-SVID for the admin's SPIFFE ID, signed by its cluster's
// intermediate; the admin APIs of the root and of the issuer refuse it, so
// it cannot register a cluster for another trust domain. An admin
// certificate from `meshca admin credential issue` opens both through
// `meshca admin --server`, until `meshca admin revoke --serial` on the
// root: then the root refuses it at once and the issuer as soon as the
// root's CRL reaches it.
func TestAdminOverMTLS(t *testing.T) {
	rootAdminAddr, adminAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	root := startRoot(t, fmt.Sprintf("intermediateTTL: 1h\nadmin:\n  listen: %s\n  spiffeIDs: [%q]\n", rootAdminAddr, opsAdminID))
	east := startIssuer(t, root, "east", "east.example", fmt.Sprintf("admin:\n  listen: %s\n  spiffeIDs: [%q]\n", adminAddr, opsAdminID))
	root.WaitListening(t, rootAdminAddr)
	east.WaitListening(t, adminAddr)
	ops := startWorkload(t, east, root.BundlePath(), "ops", "admin", 10*time.Minute)

	// The attack: the workload SVID for the admin's ID.
	// Each admin listener presents its server's serving certificate.
	serverName := map[string]string{rootAdminAddr: rootHost, adminAddr: "localhost"}
	for _, addr := range []string{rootAdminAddr, adminAddr} {
		err := workloadAdminCall(t, ops, addr, serverName[addr])
		if err == nil {
			t.Fatalf("%s: a workload X509-SVID for the admin's SPIFFE ID registered cluster west", addr)
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.PermissionDenied {
			t.Fatalf("%s: %v; want a failed handshake or PermissionDenied", addr, err)
		}
	}
	if !strings.Contains(root.Output(), "not signed directly by a trusted root") {
		t.Fatal("the root logged no reason for refusing the workload SVID")
	}
	// Nothing was registered: west is free for any trust domain.
	if _, err := run(t, "admin", "--socket", root.Socket, "cluster", "add", "west", "--trust-domain", "other.example"); err != nil {
		t.Fatalf("cluster west after the refused call: %v", err)
	}

	// An admin certificate, issued on the root's socket.
	dir := filepath.Join(t.TempDir(), "ops-admin")
	var issued struct {
		Serial string `json:"serial"`
	}
	out := mustRun(t, "admin", "--socket", root.Socket, "-o", "json", "credential", "issue", "--spiffe-id", opsAdminID, "--out", dir)
	if err := json.Unmarshal([]byte(out), &issued); err != nil || issued.Serial == "" {
		t.Fatalf("credential issue printed %q: %v", out, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	overMTLS := func(addr string, args ...string) (string, error) {
		return run(t, append([]string{"admin", "--server", addr, "--server-name", serverName[addr], "--cert", filepath.Join(dir, "cert.pem"),
			"--key", filepath.Join(dir, "key.pem"), "--ca-bundle", filepath.Join(dir, "bundle.pem"), "-o", "json"}, args...)...)
	}
	if _, err := overMTLS(rootAdminAddr, "root", "list"); err != nil {
		t.Fatalf("root admin API with the admin certificate: %v", err)
	}
	if _, err := overMTLS(adminAddr, "revocations"); err != nil {
		t.Fatalf("issuer admin API with the root's admin certificate: %v", err)
	}
	// The CLI checks which server it reached before any call.
	if _, err := overMTLS(adminAddr, "--server-identity", "east", "revocations"); err != nil {
		t.Fatalf("issuer admin API, --server-identity east: %v", err)
	}
	for addr, identity := range map[string]string{adminAddr: "root", rootAdminAddr: "east"} {
		if _, err := overMTLS(addr, "--server-identity", identity, "root", "list"); err == nil ||
			!strings.Contains(err.Error(), "want ") {
			t.Fatalf("%s with --server-identity %s: %v; want the server refused", addr, identity, err)
		}
	}
	// A second cluster in east.example only when asked for explicitly.
	if _, err := overMTLS(rootAdminAddr, "cluster", "add", "east2", "--trust-domain", "east.example"); err == nil ||
		!strings.Contains(err.Error(), "held by cluster east") {
		t.Fatalf("cluster east2 in east.example without --share-trust-domain: %v", err)
	}
	if _, err := overMTLS(rootAdminAddr, "cluster", "add", "east2", "--trust-domain", "east.example", "--share-trust-domain"); err != nil {
		t.Fatalf("cluster east2 with --share-trust-domain: %v", err)
	}
	// An admin over mutual TLS cannot mint more admin certificates.
	if _, err := overMTLS(rootAdminAddr, "credential", "issue", "--spiffe-id", opsAdminID, "--out", filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatal("an admin certificate issued another over mutual TLS")
	}

	mustRun(t, "admin", "--socket", root.Socket, "revoke", "--serial", issued.Serial, "--reason", "laptop lost")
	if _, err := overMTLS(rootAdminAddr, "root", "list"); err == nil {
		t.Fatal("the root admin API still answers a revoked admin certificate")
	}
	// The issuer learns of it from the root CRL in the relayed bundle.
	east.WaitFor(t, "the issuer refusing the revoked admin certificate", harness.StartTimeout, func() bool {
		_, err := overMTLS(adminAddr, "revocations")
		return err != nil
	})
	if !strings.Contains(east.Output(), "revoked on the root's CRL") {
		t.Fatal("the issuer refused the admin certificate, but not for its revocation on the root's CRL")
	}
}

// workloadAdminCall calls AddCluster for west.example on the admin API at
// addr, presenting w's X509-SVID and trusting w's bundle for serverName.
func workloadAdminCall(t *testing.T, w *workload, addr, serverName string) error {
	t.Helper()
	b, err := w.Source.GetX509BundleForTrustDomain(w.ID.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range b.X509Authorities() {
		pool.AddCert(r)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName,
		GetClientCertificate: tlsconfig.GetClientCertificate(w.Source)}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = meshcav1.NewAdminServiceClient(conn).AddCluster(ctx, &meshcav1.AddClusterRequest{Name: "west", TrustDomain: "west.example"})
	return err
}

// TestStandaloneIssuerAdminCredential: an issuer with its own local root
// issues admin certificates with that root on its socket; one opens its
// admin API over mutual TLS until `meshca admin revoke --serial` on the
// same socket.
func TestStandaloneIssuerAdminCredential(t *testing.T) {
	dir, addr, adminAddr := t.TempDir(), testkit.FreeAddr(t), testkit.FreeAddr(t)
	cfg := harness.WriteFile(t, filepath.Join(t.TempDir(), "solo.yaml"), fmt.Sprintf(`dataDir: %s
listen: %s
trustDomain: solo.example
cluster: solo
hosts: ["127.0.0.1", "localhost"]
admin:
  listen: %s
  spiffeIDs: ["spiffe://solo.example/admin/alice"]
clusters:
  - name: solo
    attestor: dev
`, dir, addr, adminAddr))
	p := start(t, "issuer solo", "issuer", "serve", "--config", cfg, "--log-level", "debug")
	p.WaitListening(t, adminAddr)
	sock := filepath.Join(dir, "admin.sock")
	creds := filepath.Join(t.TempDir(), "alice")
	var issued struct {
		Serial string `json:"serial"`
	}
	out := mustRun(t, "admin", "--socket", sock, "-o", "json", "credential", "issue", "--spiffe-id", "spiffe://solo.example/admin/alice",
		"--out", creds, "--ttl", "1h")
	if err := json.Unmarshal([]byte(out), &issued); err != nil || issued.Serial == "" {
		t.Fatalf("credential issue printed %q: %v", out, err)
	}
	var shown string
	call := func() error {
		out, err := run(t, "admin", "--server", adminAddr, "--cert", filepath.Join(creds, "cert.pem"), "--key", filepath.Join(creds, "key.pem"),
			"--ca-bundle", filepath.Join(creds, "bundle.pem"), "certs", "show", issued.Serial)
		shown = out
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("issuer admin API with its admin certificate: %v", err)
	}
	if !strings.Contains(shown, issued.Serial) || !strings.Contains(shown, "not revoked") {
		t.Fatalf("certs show of a valid certificate does not say \"not revoked\":\n%s", shown)
	}
	mustRun(t, "admin", "--socket", sock, "revoke", "--serial", issued.Serial)
	if out := mustRun(t, "admin", "--socket", sock, "certs", "show", issued.Serial); strings.Contains(out, "not revoked") {
		t.Fatalf("certs show of a revoked certificate says \"not revoked\":\n%s", out)
	}
	if err := call(); err == nil {
		t.Fatal("the issuer admin API still answers a revoked admin certificate")
	}
	if !strings.Contains(p.Output(), "is revoked") {
		t.Fatal("the issuer logged no revocation as the reason of the refusal")
	}
}
