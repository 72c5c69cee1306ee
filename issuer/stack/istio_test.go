package stack_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// serveIstio runs a stack with cfg's CA settings on SQLite until the test
// ends and returns its gRPC address and logs once it serves.
func serveIstio(t *testing.T, set func(*stack.Config)) (string, *stack.Config, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	var addr string
	serving := make(chan struct{})
	cfg := stack.Config{
		Name: "test issuer", TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev",
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", Hosts: []string{"istiod.istio-system.svc", "127.0.0.1"},
		OpenStore: func(ctx context.Context, _ *store.Metrics) (stack.Store, error) {
			return sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
		},
		Attestor: func() (attest.Attestor, error) { return refuseAll{}, nil },
		Serving:  func(a, _ string) { addr = a; close(serving) },
		Logger:   slog.New(slog.NewTextHandler(logs, nil)),
	}
	set(&cfg)
	startStack(t, cfg, 30*time.Second, serving)
	return addr, &cfg, logs
}

// servedChain dials addr as istio-agent does (server name
// istiod.istio-system.svc, roots from root) and returns the chain it got.
func servedChain(t *testing.T, addr string, root *x509.Certificate) []*x509.Certificate {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(root)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "istiod.istio-system.svc", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS to the issuer with root-cert.pem as the only root: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates
}

// TestIstioCASecretRoot: the issuer runs on istiod's self-signed root
// (istio-ca-secret: RSA key in PKCS#1, key usage certificate signing only)
// mounted as root.dir; clients trusting that root alone reach it, and the
// root's missing CRL signing is logged once rather than failing.
func TestIstioCASecretRoot(t *testing.T) {
	now := time.Now()
	root, keyPEM := testkit.IstioRoot(t, "istio-ca-secret", "cluster.local", now, 10*365*24*time.Hour)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ca.RootCertFile), trust.EncodeCertificates(root.Certificate), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ca.RootKeyFile), keyPEM, 0o400); err != nil {
		t.Fatal(err)
	}
	addr, cfg, logs := serveIstio(t, func(c *stack.Config) { c.RootDir = dir })
	chain := servedChain(t, addr, root.Certificate)
	if len(chain) != 2 || chain[1].CheckSignatureFrom(root.Certificate) != nil {
		t.Errorf("served chain %d certificates, want serving certificate and a meshca intermediate signed by istiod's root", len(chain))
	}
	bundle, err := os.ReadFile(filepath.Join(cfg.DataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if string(bundle) != string(trust.EncodeCertificates(root.Certificate)) {
		t.Error("bundle.pem is not istiod's root")
	}
	testkit.Eventually(t, 10*time.Second, "the root's missing CRL signing logged", func() error {
		if !strings.Contains(logs.String(), "does not allow signing CRLs") {
			return errors.New("not logged")
		}
		return nil
	})
	if n := strings.Count(logs.String(), "does not allow signing CRLs"); n != 1 {
		t.Errorf("the root's missing CRL signing was logged %d times, want once", n)
	}
	if strings.Contains(logs.String(), "signing a CRL failed") {
		t.Error("the CRL signer tried to sign with istiod's root")
	}
}

// TestIstioPluggedCACerts: the issuer runs on Istio's cacerts with no root
// key: its serving certificate is signed directly by the plugged
// intermediate, bundle.pem is root-cert.pem, and files replaced while it
// runs are followed.
func TestIstioPluggedCACerts(t *testing.T) {
	now := time.Now()
	root, _ := testkit.IstioRoot(t, "cacerts-root", "cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
	inter := testkit.IstioIntermediate(t, root, "cacerts-inter", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	files := testkit.WriteCACerts(t, t.TempDir(), inter, root.Certificate)
	opsAddr := make(chan string, 1)
	addr, cfg, _ := serveIstio(t, func(c *stack.Config) {
		c.Plugged = &issuer.PluggedCAConfig{Files: files, PollInterval: 100 * time.Millisecond}
		c.MetricsListen, c.MetricsServing = "127.0.0.1:0", func(a string) { opsAddr <- a }
	})
	ops := <-opsAddr
	chain := servedChain(t, addr, root.Certificate)
	if len(chain) != 2 || !chain[1].Equal(inter.Certificate) {
		t.Fatalf("served chain of %d certificates, want the serving certificate and ca-cert.pem", len(chain))
	}
	bundle, err := os.ReadFile(filepath.Join(cfg.DataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if string(bundle) != string(trust.EncodeCertificates(root.Certificate)) {
		t.Error("bundle.pem is not root-cert.pem")
	}

	// Its expiry is exported like any intermediate's, for the alert that
	// must warn the operator: meshca cannot renew it.
	expiry := func(c *x509.Certificate) string {
		return fmt.Sprintf(`meshca_ca_expiry_timestamp_seconds{cluster="dev",kind="intermediate",sha256="%x"} %s`,
			sha256.Sum256(c.Raw), strconv.FormatFloat(float64(c.NotAfter.Unix()), 'g', -1, 64))
	}
	if code, body := testkit.GetText(t, "http://"+ops+"/metrics"); code != 200 || !strings.Contains(body, expiry(inter.Certificate)) {
		t.Errorf("/metrics (%d) lacks %s", code, expiry(inter.Certificate))
	}
	if code, body := testkit.GetText(t, "http://"+ops+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s, want ready", code, body)
	}

	next := testkit.IstioIntermediate(t, root, "cacerts-next", now.Add(-time.Hour), now.Add(400*24*time.Hour))
	testkit.WriteCACerts(t, filepath.Dir(files.CertFile), next, root.Certificate)
	testkit.Eventually(t, 10*time.Second, "the replaced intermediate served", func() error {
		if c := servedChain(t, addr, root.Certificate); len(c) < 2 || !c[1].Equal(next.Certificate) {
			return errors.New("still the first intermediate")
		}
		return nil
	})
}

// TestValidateRefusesPluggedWithRoot: a plugged intermediate excludes a
// root dir (and upstream).
func TestValidateRefusesPluggedWithRoot(t *testing.T) {
	cfg := stack.Config{
		Name: "x", TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev", DataDir: t.TempDir(),
		OpenStore: func(context.Context, *store.Metrics) (stack.Store, error) { return nil, nil },
		Attestor:  func() (attest.Attestor, error) { return refuseAll{}, nil },
		RootDir:   t.TempDir(),
		Plugged:   &issuer.PluggedCAConfig{Files: ca.PluggedFiles{CertFile: "c", KeyFile: "k", RootFile: "r"}},
	}
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate accepted a plugged intermediate with a root dir")
	}
}
