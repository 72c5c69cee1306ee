package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/meshca/meshca/test/kubetest"
)

// meshcaBinary returns $MESHCA_BIN or builds cmd/meshca into a temp dir.
func meshcaBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("MESHCA_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "meshca")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/meshca/meshca/cmd/meshca").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/meshca: %v\n%s", err, out)
	}
	return bin
}

// TestIssuerServe runs `meshca issuer serve --config` as a process against
// the real API server, as deployed: TokenReview through a kubeconfig,
// istio-agent's default clusterid alias, SQLite, file root; and the same API
// server as a second cluster "north" in JWKS mode.
func TestIssuerServe(t *testing.T) {
	c := east(t)
	bin := meshcaBinary(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "east.kubeconfig")
	c.WriteKubeconfig(t, kubeconfig, "")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	config := filepath.Join(dir, "issuer.yaml")
	writeFile(t, config, fmt.Sprintf(`dataDir: %s
listen: %s
cluster: east
hosts: ["127.0.0.1", "istiod.istio-system.svc"]
clusters:
  - name: east
    aliases: ["Kubernetes"]
    attestor: tokenreview
    kubeconfig: %s
    audiences: ["istio-ca"]
    policy:
      deny: ["kube-system/*"]
  - name: north
    attestor: jwks
    kubeconfig: %s
    audiences: ["istio-ca"]
    jwks:
      issuer: %s
`, filepath.Join(dir, "data"), addr, kubeconfig, kubeconfig, kubetest.Issuer))

	var stderr syncBuffer
	cmd := exec.Command(bin, "issuer", "serve", "--config", config)
	cmd.Stdout, cmd.Stderr = &bytes.Buffer{}, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	waitListening(t, addr, exited, &stderr)

	bundle, err := os.ReadFile(filepath.Join(dir, "data", "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{client: dialIssuer(t, addr, bundle), logs: &stderr}
	wl := newWorkload(t, c)
	tok := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	w.mustIssue(t, tok, "Kubernetes", wl.spiffeID())
	w.mustIssue(t, tok, "", wl.spiffeID())
	// The same API server configured as a second cluster in JWKS mode.
	w.mustIssue(t, tok, "north", wl.spiffeID())
	_, err = w.issue(t, c.PodToken(t, wl.ns, wl.sa, wl.pod, "vault"), "")
	w.checkFailure(t, err, codes.Unauthenticated)
	_, err = w.issue(t, tok, "west")
	w.checkFailure(t, err, codes.Unauthenticated)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("issuer exited with %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("issuer did not stop within 20s of SIGTERM")
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"msg":"certificate issued"`) || !strings.Contains(logs, `"msg":"certificate request rejected"`) {
		t.Errorf("issuer log lacks the issuance or the rejection reason:\n%s", logs)
	}
	w.requireTokensNotLogged(t, tok)
}

func waitListening(t *testing.T, addr string, exited <-chan error, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("issuer exited before listening: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("issuer not listening on %s after 60s\n%s", addr, stderr.String())
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

func dialIssuer(t *testing.T, addr string, bundlePEM []byte) pb.IstioCertificateServiceClient {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundlePEM) {
		t.Fatal("bundle.pem holds no certificate")
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "istiod.istio-system.svc"})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
