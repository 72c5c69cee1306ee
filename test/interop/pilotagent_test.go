package interop

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
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
)

// Where pilot-agent looks for things, relative to its working directory (a pod's root). Each is
// a constant of the pinned istio.io/istio module:
const (
	// pkg/config/constants.ThirdPartyJwtPath, read by the JWT credential fetcher
	// (security/pkg/credentialfetcher) for JWT_POLICY=third-party-jwt, the default.
	istioTokenPath = "var/run/secrets/tokens/istio-token"
	// pkg/istio-agent.CitadelCACertPath + constants.CACertNamespaceConfigMapDataName: the
	// istio-ca-root-cert ConfigMap's mount, the CA connection's root (Agent.FindRootCAForCA)
	// and the XDS connection's (Agent.FindRootCAForXDS) when CA_ROOT_CA and XDS_ROOT_CA are unset.
	istioRootCertPath = "var/run/secrets/istio/root-cert.pem"
	// pkg/security.WorkloadIdentityPath + DefaultWorkloadIdentitySocketFile: the SDS server's
	// socket (Agent.Run, security.GetIstioSDSServerSocketPath).
	istioSDSSocketPath = "var/run/secrets/workload-spiffe-uds/socket"
)

// pilotAgent is a running `pilot-agent proxy sidecar` in its own directory.
type pilotAgent struct {
	*proc
	dir       string
	sdsSocket string
}

// pilotAgentBinary returns $MESHCA_PILOT_AGENT_BIN (set by `make`, test/testbed/istio.mk),
// else the test bed's cached build for this module's istio.io/istio version. Without it the
// test fails under CI=true and is skipped otherwise.
func pilotAgentBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("MESHCA_PILOT_AGENT_BIN")
	if bin == "" {
		bin = defaultPilotAgentPath()
	}
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("pilot-agent not built (%v): run `make testbed-istio`, or set MESHCA_PILOT_AGENT_BIN", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// defaultPilotAgentPath is where test/testbed/istio.mk caches pilot-agent: named after the
// istio.io/istio version that test/testbed/istio/go.mod pins (a test binary carries no
// dependency versions in its build information).
func defaultPilotAgentPath() string {
	version, err := requiredVersion(filepath.Join("..", "testbed", "istio", "go.mod"), "istio.io/istio")
	if err != nil {
		version = "unknown"
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "meshca-testbed", "pilot-agent-"+version)
}

// requiredVersion returns the version of module that the go.mod file at path requires.
func requiredVersion(path, module string) (string, error) {
	mod, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(mod)) {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == module {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s does not require %s", path, module)
}

// TestIstioVersionsAgree holds the three places that name the Istio version to one value: this
// module's go.mod (the CA client the tests link), test/testbed/istio/go.mod (the pilot-agent
// the test bed builds) and ISTIO_VERSION in test/testbed/istio.mk (the cached binary's name).
func TestIstioVersionsAgree(t *testing.T) {
	here, err := requiredVersion("go.mod", "istio.io/istio")
	if err != nil {
		t.Fatal(err)
	}
	testbed, err := requiredVersion(filepath.Join("..", "testbed", "istio", "go.mod"), "istio.io/istio")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile(filepath.Join("..", "testbed", "istio.mk"))
	if err != nil {
		t.Fatal(err)
	}
	var mkVersion string
	for line := range strings.Lines(string(mk)) {
		if name, value, ok := strings.Cut(line, ":="); ok && strings.TrimSpace(name) == "ISTIO_VERSION" {
			mkVersion = strings.TrimSpace(value)
		}
	}
	if here != testbed || mkVersion != testbed {
		t.Errorf("istio.io/istio versions differ: test/interop/go.mod %q, test/testbed/istio/go.mod %q, istio.mk ISTIO_VERSION %q",
			here, testbed, mkVersion)
	}
}

// startPilotAgent runs Istio's sidecar agent against dev alone, with token as its projected
// service-account token, and waits until its SDS socket exists. No istiod and no Envoy run:
//
//   - Envoy is replaced by a stub that only waits to be killed (ProxyConfig.binaryPath), so
//     that the agent still serves SDS. DISABLE_ENVOY=true would not do: it turns the SDS
//     server off (pkg/istio-agent/agent.go, Agent.initSdsServer: "For proxyless we don't need
//     an SDS server"); only the agent's own proxyless key rotation remains.
//   - The XDS proxy connects upstream only when Envoy connects to it, which the stub never
//     does: discoveryAddress points at a closed loopback port and nothing blocks on it.
//
// The environment, each read in pilot/cmd/pilot-agent/options (options.go, security.go):
//
//	CA_ADDR=127.0.0.1:<port>   meshca's Istio CA API (security.Options.CAEndpoint); without it
//	                           the CA is discoveryAddress, i.e. istiod
//	POD_NAMESPACE, SERVICE_ACCOUNT   the SPIFFE ID the CSR asks for
//	                           (security/pkg/nodeagent/cache/secretcache.go, generateNewSecret)
//	TRUST_DOMAIN=cluster.local the default, written out
//	ISTIO_META_CLUSTER_ID=Kubernetes  sent as the "ClusterID" gRPC metadata of every CSR
//	                           (security/pkg/nodeagent/caclient/providers/citadel); unset, it
//	                           sends "" (meshca: the local cluster); Istio's injector sets
//	                           "Kubernetes" (pkg/kube/inject), set here as injected: meshca
//	                           routes it to its own cluster (attest.IstioDefaultClusterID)
//	CLOUD_PLATFORM=none        skips the 5 s probe of GCP/AWS/Azure metadata servers
//	                           (pkg/bootstrap/platform.Discover)
//	PROXY_CONFIG={...}         ProxyConfig JSON (pilot/cmd/pilot-agent/config): binaryPath (the
//	                           stub), customConfigFile (an empty file for the stub; without it
//	                           the agent renders Envoy's bootstrap from
//	                           ./var/lib/istio/envoy/envoy_bootstrap_tmpl.json, which only the
//	                           proxyv2 image has), discoveryAddress, statusPort (a free port:
//	                           the default 15020 is fixed and 0 fails validation),
//	                           terminationDrainDuration 0s (SIGTERM then stops at once instead
//	                           of draining the absent Envoy for 5 s)
//
// The root for the CA connection is meshca's bundle.pem at istioRootCertPath, where Kubernetes
// mounts the istio-ca-root-cert ConfigMap. CA_ROOT_CA=<file> alone is not enough: the XDS proxy
// then fails the start ("root CA file for XDS does not exist", Agent.FindRootCAForXDS) unless
// XDS_ROOT_CA=<file> is set too.
func startPilotAgent(t testing.TB, bin string, dev *devServer, token string) *pilotAgent {
	t.Helper()
	return startPilotAgentFor(t, bin, pilotAgentSpec{caPort: dev.port, bundlePath: dev.bundlePath, token: token, serviceAccount: serviceAcct})
}

// pilotAgentSpec is what differs between the pilot-agents of one test.
type pilotAgentSpec struct {
	// caPort is the loopback port of meshca's Istio CA API; bundlePath the
	// PEM roots copied to the agent's root-cert.pem.
	caPort, bundlePath    string
	token, serviceAccount string
	// env is added to the environment (e.g. SECRET_TTL).
	env []string
}

// startPilotAgentFor is startPilotAgent for one workload of spec.
func startPilotAgentFor(t testing.TB, bin string, spec pilotAgentSpec) *pilotAgent {
	t.Helper()
	dir := t.TempDir()
	bundle, err := os.ReadFile(spec.bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, istioTokenPath), []byte(spec.token), 0o600)
	writeFile(t, filepath.Join(dir, istioRootCertPath), bundle, 0o644)
	stub := filepath.Join(dir, "envoy-stub")
	writeFile(t, stub, []byte("#!/bin/sh\n# Stands in for Envoy: waits until pilot-agent kills it.\nexec sleep 1000000\n"), 0o755)
	stubConfig := filepath.Join(dir, "envoy-stub.json")
	writeFile(t, stubConfig, []byte("{}\n"), 0o644)

	proxyConfig, err := json.Marshal(map[string]any{
		"binaryPath":               stub,
		"customConfigFile":         stubConfig,
		"discoveryAddress":         net.JoinHostPort("127.0.0.1", freePort(t)),
		"statusPort":               mustAtoi(t, freePort(t)),
		"terminationDrainDuration": "0s",
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "proxy", "sidecar")
	cmd.Dir = dir
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"CA_ADDR=" + net.JoinHostPort("127.0.0.1", spec.caPort),
		"POD_NAME=interop-test",
		"POD_NAMESPACE=" + namespace,
		"SERVICE_ACCOUNT=" + spec.serviceAccount,
		"TRUST_DOMAIN=" + trustDomain,
		"ISTIO_META_CLUSTER_ID=Kubernetes",
		"CLOUD_PLATFORM=none",
		"PROXY_CONFIG=" + string(proxyConfig),
	}, spec.env...)
	p := &pilotAgent{proc: startProc(t, "pilot-agent "+spec.serviceAccount, cmd), dir: dir, sdsSocket: filepath.Join(dir, istioSDSSocketPath)}
	deadline := time.Now().Add(startTimeout)
	for {
		p.failIfExited(t)
		if fi, err := os.Stat(p.sdsSocket); err == nil && fi.Mode().Type() == os.ModeSocket {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pilot-agent has no SDS socket at %s after %v\n%s", p.sdsSocket, startTimeout, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopClean stops pilot-agent and fails the test unless it exits 0 and its log holds no key.
func (p *pilotAgent) stopClean(t testing.TB) {
	t.Helper()
	if err := p.stop(t); err != nil {
		t.Errorf("pilot-agent after SIGTERM: %v, want exit 0\n%s", err, p.output())
	}
	if out := p.out.String(); strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "eyJ") {
		t.Error("pilot-agent's log contains key material or a token")
	}
}

// TestPilotAgentSDS runs Istio's real sidecar agent (pilot-agent, built by the test bed from the
// pinned istio.io/istio) against `meshca dev` alone, and reads what it serves Envoy: its
// `default` secret must be a meshca leaf for the workload's SPIFFE ID, with the RSA-2048 key
// istio-agent generates by default, verifying up to meshca's bundle; its `ROOTCA` secret must
// hold meshca's root.
func TestPilotAgentSDS(t *testing.T) {
	agentBin := pilotAgentBinary(t)
	bin := meshcaBinary(t)
	dev := startDev(t, bin)
	token := mintToken(t, bin, dev.dataDir, namespace, serviceAcct, istioAudience)
	pa := startPilotAgent(t, agentBin, dev, token)

	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	sds := dialSDS(t, pa.sdsSocket)
	defSecret, err := sds.fetchSecret(ctx, "default")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, pa.output(), dev.output())
	}
	rootSecret, err := sds.fetchSecret(ctx, "ROOTCA")
	if err != nil {
		t.Fatalf("%v\n%s", err, pa.output())
	}
	chain, err := tlsCertificateOf(defSecret)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := trustedCAOf(rootSecret)
	if err != nil {
		t.Fatal(err)
	}

	leaf := chain[0]
	if got := urisOf(leaf); len(got) != 1 || got[0] != workloadID {
		t.Errorf("default: leaf URI SANs = %q, want exactly [%q]", got, workloadID)
	}
	if leaf.IsCA {
		t.Error("default: leaf is a CA certificate")
	}
	if pub, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || pub.N.BitLen() != 2048 {
		t.Errorf("default: leaf key is %T, want the RSA-2048 key istio-agent generates by default", leaf.PublicKey)
	}
	// Envoy uses the certificate both ways in mTLS; verify each usage against meshca's bundle
	// and against what ROOTCA serves.
	for _, anchors := range []struct {
		name  string
		roots []*x509.Certificate
	}{{"bundle.pem", dev.bundleRoots}, {"ROOTCA", roots}} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if err := verifyLeaf(chain, anchors.roots, usage); err != nil {
				t.Errorf("default: leaf does not verify against %s for usage %v: %v", anchors.name, usage, err)
			}
		}
	}
	for _, r := range roots {
		if !slices.ContainsFunc(dev.bundleRoots, r.Equal) {
			t.Errorf("ROOTCA holds %s, which is not in meshca's bundle.pem", r.Subject)
		}
	}
	if top := chain[len(chain)-1]; !slices.ContainsFunc(roots, top.Equal) {
		t.Errorf("ROOTCA (%s) does not hold the root the default chain ends in (%s)", subjects(roots), subjects(chain))
	}
	t.Logf("pilot-agent serves default %s and ROOTCA %s", subjects(chain), subjects(roots))
	pa.stopClean(t)
}

// verifyLeaf verifies chain[0] up to roots through chain[1:] for usage.
func verifyLeaf(chain, roots []*x509.Certificate, usage x509.ExtKeyUsage) error {
	if len(roots) == 0 {
		return errors.New("no roots")
	}
	rootPool, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

func mustAtoi(t testing.TB, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}
