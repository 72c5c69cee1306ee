package kube

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/kubetest"
)

// meshcaBinary returns $MESHCA_BIN or builds cmd/meshca into a temp dir.
func meshcaBinary(t *testing.T) string {
	t.Helper()
	bin, err := testkit.MeshcaBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
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
	addr := testkit.FreeAddr(t)
	rootsNS := c.Namespace(t)
	config := filepath.Join(dir, "issuer.yaml")
	writeFile(t, config, fmt.Sprintf(`dataDir: %s
listen: %s
cluster: east
istioRootConfigMaps: {enabled: true, namespaces: [%s], leaseNamespace: %s}
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
`, filepath.Join(dir, "data"), addr, rootsNS, rootsNS, kubeconfig, kubeconfig, kubetest.Issuer))

	p := harness.Start(t, bin, "issuer", "issuer", "serve", "--config", config)
	p.WaitListening(t, addr)

	bundle, err := os.ReadFile(filepath.Join(dir, "data", "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{client: dialIssuer(t, addr, bundle), logs: p.Output}
	// istioRootConfigMaps: the ConfigMap holds the issuer's roots, as
	// bundle.pem does.
	waitRootCM(t, c, rootsNS, string(bundle), "istio-ca-root-cert of meshca issuer serve")
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

	if err := p.Stop(t); err != nil {
		t.Errorf("issuer exited with %v\n%s", err, p.Output())
	}
	logs := p.Output()
	if !strings.Contains(logs, `"msg":"certificate issued"`) || !strings.Contains(logs, `"msg":"certificate request rejected"`) {
		t.Errorf("issuer log lacks the issuance or the rejection reason:\n%s", logs)
	}
	w.requireTokensNotLogged(t, tok)
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
