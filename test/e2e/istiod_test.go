package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/trust"
)

var istiodDNSNames = []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}

// istiodDevConfig grants istio-system/istiod its serving names and allows
// certificates short enough for a renewal within the test.
const istiodDevConfig = `leafTTL: 1h
leafMinTTL: 1s
dnsGrants:
- namespace: istio-system
  serviceAccount: istiod
  dnsNames: [istiod.istio-system.svc, istiod.istio-system.svc.cluster.local]
`

// istiodServer serves TLS the way istiod does with --tlsCertFile,
// --tlsKeyFile and --caCertFile: the key pair is loaded from the files
// (tls.X509KeyPair, as istiod's loadIstiodCert) at every handshake, so a
// renewal is picked up.
func istiodServer(t *testing.T, dir string) string {
	t.Helper()
	lis := testkit.Listen(t)
	srv := tls.NewListener(lis, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		return &c, err
	}})
	go func() {
		for {
			conn, err := srv.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	return lis.Addr().String()
}

// dialIstiod is an Istio client reaching istiod: it trusts bundle.pem and
// checks the served certificate for serverName. It returns the leaf.
func dialIstiod(addr, bundleFile, serverName string) (*x509.Certificate, error) {
	pem, err := os.ReadFile(bundleFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, errors.New("bundle.pem holds no certificate")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// istiod's own certificate: `meshca agent --dns-name` for istio-system/istiod
// writes cert.pem, key.pem and bundle.pem, which serve TLS that a client
// trusting bundle.pem accepts for istiod.istio-system.svc; renewals rewrite
// them; another identity asking for the names gets nothing.
func TestAgentIstiodCertificate(t *testing.T) {
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "dev.yaml"), istiodDevConfig)
	srv := startDev(t, devOptions{Dir: work, Args: []string{"--config", filepath.Join(work, "dev.yaml")}})
	_, istiodToken := mintToken(t, srv.Dir, "istiod-token", "--namespace", "istio-system", "--service-account", "istiod")
	argv := []string{meshcaBin, "agent", "--dns-name", istiodDNSNames[0], "--dns-name", istiodDNSNames[1]}
	a := startAgentCmd(t, argv, srv, istiodToken, 4*time.Second)

	fi, err := os.Stat(filepath.Join(a.OutDir, "key.pem"))
	if err != nil {
		t.Fatalf("key.pem once the agent is ready: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem mode %v, want 0600", fi.Mode().Perm())
	}
	addr := istiodServer(t, a.OutDir)
	bundle := filepath.Join(a.OutDir, "bundle.pem")
	first, err := dialIstiod(addr, bundle, "istiod.istio-system.svc")
	if err != nil {
		t.Fatalf("TLS to istiod.istio-system.svc with the agent's files: %v", err)
	}
	if !slices.Equal(first.DNSNames, istiodDNSNames) || len(first.URIs) != 1 ||
		first.URIs[0].String() != "spiffe://cluster.local/ns/istio-system/sa/istiod" {
		t.Errorf("served certificate names DNS %q URIs %v", first.DNSNames, first.URIs)
	}
	if _, err := dialIstiod(addr, bundle, "istiod.istio-system.svc.cluster.local"); err != nil {
		t.Errorf("TLS to istiod.istio-system.svc.cluster.local: %v", err)
	}
	for _, other := range []string{"istiod-remote.istio-system.svc", "x.istiod.istio-system.svc"} {
		if _, err := dialIstiod(addr, bundle, other); err == nil {
			t.Errorf("TLS for %s accepted a certificate that does not name it", other)
		}
	}

	// Renewal rewrites the files; istiod's reload (key and certificate
	// read together) still finds a matching pair.
	testkit.Eventually(t, 30*time.Second, "the agent renews istiod's certificate", func() error {
		leaf, err := dialIstiod(addr, bundle, "istiod.istio-system.svc")
		if err != nil {
			return err
		}
		if leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("still serial %s", trust.SerialHex(leaf.SerialNumber))
		}
		return nil
	})
	if out := a.stderr.String(); strings.Contains(out, "PRIVATE KEY") {
		t.Error("the agent logged key material")
	}

	// default/web asking for istiod's name: refused, nothing written.
	_, webToken := mintToken(t, srv.Dir, "web-token")
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, meshcaBin, "agent", "--issuer", srv.Addr, "--ca-bundle", srv.BundlePath(), "--token-file", webToken,
		"--out", out, "--health-addr", "", "--dns-name", istiodDNSNames[0])
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	if !strings.Contains(stderr.String(), "PermissionDenied") || !strings.Contains(stderr.String(), "may not have DNS names") {
		t.Errorf("web asking for istiod's name: log does not show the refusal:\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, "cert.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("web asking for istiod's name: cert.pem written (%v)", err)
	}
	if !strings.Contains(srv.Output(), `"reason":"names"`) && !strings.Contains(srv.Output(), "may not have DNS names") {
		t.Errorf("meshca dev's log does not name the refusal:\n%s", srv.Output())
	}
}

// Under a central root the root decides: `meshca admin cluster add
// --dns-name` puts istiod's names in the cluster's record, the issuer's
// dnsGrants give them to istio-system/istiod, and `meshca agent
// --dns-name` writes files whose certificate a TLS client trusting the
// root's bundle accepts for istiod.istio-system.svc.
func TestAgentIstiodCertificateUnderRoot(t *testing.T) {
	r := startObservedRoot(t)
	var dnsArgs []string
	for _, n := range istiodDNSNames {
		dnsArgs = append(dnsArgs, "--dns-name", n)
	}
	token := r.joinTokenFile(t, "east", "east.example", dnsArgs...)
	if status, err := harness.Run(meshcaBin, "status", "--socket", r.socket); err != nil || !strings.Contains(status, strings.Join(istiodDNSNames, ",")) {
		t.Errorf("root status does not list east's DNS names (%v):\n%s", err, status)
	}
	dir, addr := t.TempDir(), testkit.FreeAddr(t)
	cfg := harness.WriteFile(t, filepath.Join(t.TempDir(), "issuer.yaml"), r.issuerYAML(dir, addr, "east", "east.example", token, `dnsGrants:
  - namespace: istio-system
    serviceAccount: istiod
    dnsNames: [istiod.istio-system.svc, istiod.istio-system.svc.cluster.local]
`))
	is := harness.Start(t, meshcaBin, "issuer east", "issuer", "serve", "--config", cfg)
	is.WaitListening(t, addr)

	jwt, err := harness.Run(meshcaBin, "dev", "token", "--data-dir", dir, "--namespace", "istio-system", "--service-account", "istiod")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	tokenFile, outDir := harness.WriteFile(t, filepath.Join(work, "token"), jwt), filepath.Join(work, "out")
	agentArgs := []string{"agent", "--issuer", addr, "--server-name", "localhost", "--ca-bundle", r.bundle, "--token-file", tokenFile,
		"--issuer-cluster", "east", "--out", outDir, "--health-addr", ""}
	for _, n := range istiodDNSNames {
		agentArgs = append(agentArgs, "--dns-name", n)
	}
	a := harness.Start(t, meshcaBin, "meshca agent", agentArgs...)
	a.WaitFor(t, "istiod's files", harness.StartTimeout, func() bool { return fileExists(filepath.Join(outDir, "bundle.pem")) })

	srv := istiodServer(t, outDir)
	leaf, err := dialIstiod(srv, r.bundle, "istiod.istio-system.svc")
	if err != nil {
		t.Fatalf("TLS to istiod.istio-system.svc, trusting the root's bundle: %v", err)
	}
	if !slices.Equal(leaf.DNSNames, istiodDNSNames) || leaf.URIs[0].String() != "spiffe://east.example/ns/istio-system/sa/istiod" {
		t.Errorf("served certificate names DNS %q URIs %v", leaf.DNSNames, leaf.URIs)
	}
	if _, err := dialIstiod(srv, r.bundle, "x.istiod.istio-system.svc"); err == nil {
		t.Error("TLS for x.istiod.istio-system.svc accepted")
	}
}
