package k8s

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/test/chart"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/nodetest"
)

// Image names and tag of the suite: built here from this checkout.
const (
	imageTag    = "e2e"
	meshcaImage = "localhost/meshca"
	agentImage  = "localhost/meshca-agent"
	appImage    = "localhost/mtlsapp:" + imageTag
	releaseName = "meshca"
	trustDomain = "cluster.local"
	// chartCluster is the chart's default cluster name, which the issuer's
	// intermediate names and the sidecars require.
	chartCluster  = "cluster1"
	tokenAudience = "istio-ca"
	// issuerReplicas run on the one node, on the host network.
	issuerReplicas = 2
	// leafTTL is the issuer's default certificate lifetime, what most
	// workloads of the suite get.
	leafTTL = 30 * time.Second
	// renewTTL is the lifetime the long-running workloads (a and b)
	// request (meshca-agent --ttl), the issuer's minimum: they renew every
	// 4 to 6 s, also while the issuer is upgraded.
	renewTTL = 10 * time.Second
)

// buildImages builds meshca and meshca-agent as `make images` does (static,
// stripped, the agent with its build tags), packs them with
// tools/imagebuild, imports them into the node and returns the host path of
// the meshca binary (a static Linux program: it runs here too).
func buildImages(t *testing.T, n *nodetest.Node) string {
	t.Helper()
	dir := t.TempDir()
	build := func(name string, tags ...string) string {
		bin := filepath.Join(dir, name)
		args := []string{"build", "-ldflags", "-X main.version=v0.0.0-e2e -s -w", "-o", bin}
		if len(tags) > 0 {
			args = append(args, "-tags", tags[0])
		}
		cmd := testkit.GoCommand(context.Background(), append(args, "../../cmd/"+name)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
		return bin
	}
	meshca := build("meshca")
	agent := build("meshca-agent", "grpcnotrace,netgo")
	n.ImportImage(t, n.PackImage(t, meshca, meshcaImage+":"+imageTag))
	n.ImportImage(t, n.PackImage(t, agent, agentImage+":"+imageTag))
	n.BuildImage(t, "./testdata/mtlsapp", appImage)
	return meshca
}

// release is an installed chart.
type release struct {
	n          *nodetest.Node
	ns         string // the release's namespace
	kubeconfig string
	// issuerAddr is where the issuer replicas listen on the node;
	// serverName the name in their serving certificates.
	issuerAddr, serverName string
	root                   *x509.Certificate
	values                 map[string]any
	// uninstalled: the test has run `helm uninstall` itself.
	uninstalled bool
	// baseline is what the release's namespace held before the install
	// (namespaceObjects): what uninstall must leave, and only that.
	baseline map[string]bool
}

// install creates the release's namespace, a PostgreSQL database and its
// DSN Secret, a root CA Secret made by `meshca issuer init-root`, and
// installs the chart with helm into the node's API server (host network:
// the issuer on free ports of the node, reaching the API server directly).
// deny are attestation deny patterns. Cleanup uninstalls it.
func install(t *testing.T, n *nodetest.Node, meshcaBin string, deny []string) *release {
	t.Helper()
	r := &release{n: n, ns: n.Namespace(t)}
	r.serverName = releaseName + "." + r.ns + ".svc"
	ctx := context.Background()
	secret := func(name string, data map[string][]byte) {
		_, err := n.Admin.CoreV1().Secrets(r.ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	secret("meshca-db", map[string][]byte{"dsn": []byte(pgtest.NewDatabase(t))})
	rootDir := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command(meshcaBin, "issuer", "init-root", "--dir", rootDir).CombinedOutput(); err != nil {
		t.Fatalf("meshca issuer init-root: %v\n%s", err, out)
	}
	rootKey, err1 := os.ReadFile(filepath.Join(rootDir, "root-key.pem"))
	rootPEM, err2 := os.ReadFile(filepath.Join(rootDir, "root.pem"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	secret("meshca-root-ca", map[string][]byte{"root-key.pem": rootKey, "root.pem": rootPEM})
	r.root = parseCert(t, rootPEM)

	port := testkit.FreePort(t)
	r.issuerAddr = "127.0.0.1:" + strconv.Itoa(port)
	var env []map[string]string
	for _, e := range n.APIServerEnv() {
		env = append(env, map[string]string{"name": e.Name, "value": e.Value})
	}
	r.values = map[string]any{
		"image":       map[string]any{"repository": meshcaImage, "agentRepository": agentImage, "tag": imageTag, "pullPolicy": "Never"},
		"trustDomain": trustDomain,
		"issuer": map[string]any{
			"replicas": issuerReplicas, "hostNetwork": true, "bindAddress": "0.0.0.0", "port": port,
			"store":       map[string]any{"driver": "postgres", "dsnSecret": map[string]any{"name": "meshca-db"}},
			"rootCA":      map[string]any{"existingSecret": "meshca-root-ca"},
			"attestation": map[string]any{"policy": map[string]any{"deny": deny}, "cacheTTL": "5s"},
			"extraEnv":    env,
			// Short-lived leaves: the sidecars renew every few seconds,
			// also while the issuer is upgraded.
			"leafTTL":     leafTTL.String(),
			"extraConfig": map[string]any{"leafMinTTL": renewTTL.String()},
		},
		"metrics": map[string]any{"port": testkit.FreePort(t)},
	}
	cert, key, err := n.ClientCert("meshca-e2e-admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	r.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := n.WriteCertKubeconfig(r.kubeconfig, cert, key); err != nil {
		t.Fatal(err)
	}
	// The namespace's own objects, made by the controller manager, are
	// part of the baseline.
	testkit.Eventually(t, time.Minute, "the namespace's default objects", func() error {
		r.baseline = r.namespaceObjects(t)
		for _, want := range []string{"serviceaccounts " + r.ns + "/default", "configmaps " + r.ns + "/kube-root-ca.crt"} {
			if !r.baseline[want] {
				return fmt.Errorf("no %s yet", want)
			}
		}
		return nil
	})
	r.helm(t, "install", releaseName, chartDir(), "--wait", "--timeout", "3m")
	// Both replicas run on the one node, sharing its ports.
	d, err := n.Admin.AppsV1().Deployments(r.ns).Get(ctx, releaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status.ReadyReplicas != issuerReplicas {
		t.Fatalf("issuer Deployment has %d ready replicas, want %d", d.Status.ReadyReplicas, issuerReplicas)
	}
	t.Cleanup(func() {
		if r.uninstalled {
			return
		}
		if _, err := r.run("uninstall", releaseName, "--wait", "--timeout", "2m"); err != nil {
			t.Errorf("helm uninstall: %v", err)
		}
	})
	return r
}

// helm runs helm against the release's namespace; install and upgrade
// get the release's values.
func (r *release) helm(t *testing.T, args ...string) string {
	t.Helper()
	if args[0] == "install" || args[0] == "upgrade" {
		values, err := yaml.Marshal(r.values)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", harness.WriteFile(t, filepath.Join(t.TempDir(), "values.yaml"), string(values)))
	}
	out, err := r.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (r *release) run(args ...string) (string, error) {
	out, err := chart.Tool("helm", append(args, "--kubeconfig", r.kubeconfig, "--namespace", r.ns)...)
	return string(out), err
}

func chartDir() string { return chart.ChartDir() }

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
