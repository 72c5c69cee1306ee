package multicluster

import (
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// wrongServer is what meshca's clients say when the server they reached is
// not the one they asked for (trust.ErrWrongServer).
const wrongServer = "not the expected meshca server"

// TestClientsVerifyWhichServer: every cluster's issuer serves under the same
// names and chains to the same root, yet meshca's clients tell them apart
// (and from the root) at the TLS handshake, before any token or CSR leaves:
// a west agent pointed at east's issuer, `meshca cert fetch --cluster-id
// west` against east's issuer and an issuer whose upstream address is
// another issuer all refuse, and east's issuer sees no request.
func TestClientsVerifyWhichServer(t *testing.T) {
	root := startRoot(t, "")
	east := startIssuer(t, root, "east", "east.example", "")
	west := startIssuer(t, root, "west", "west.example", "")
	dir := t.TempDir()
	westToken := harness.WriteFile(t, filepath.Join(dir, "west-token"),
		mustRun(t, "dev", "token", "--data-dir", west.Dir, "--namespace", "shop", "--service-account", "web", "--ttl", "24h"))

	// A west agent whose address leads to east's issuer.
	agent := start(t, "agent west -> east", "agent", "--issuer", east.Addr, "--server-name", "localhost", "--cluster-id", "west",
		"--ca-bundle", root.BundlePath(), "--token-file", westToken, "--out", filepath.Join(dir, "agent-out"), "--health-addr", "", "--log-level", "debug")
	agent.WaitFor(t, "a refused handshake", harness.StartTimeout, func() bool { return strings.Contains(agent.Output(), wrongServer) })
	if _, err := os.Stat(filepath.Join(dir, "agent-out", "cert.pem")); err == nil {
		t.Error("the west agent got a certificate from east's issuer")
	}

	// `meshca cert fetch` for west against east's issuer.
	_, err := run(t, "cert", "fetch", "--issuer", east.Addr, "--server-name", "localhost", "--cluster-id", "west",
		"--ca-bundle", root.BundlePath(), "--token-file", westToken, "--out", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), wrongServer) {
		t.Fatalf("cert fetch for west from east's issuer: %v, want a refused handshake", err)
	}
	// The same against west's issuer works.
	if _, err := run(t, "cert", "fetch", "--issuer", west.Addr, "--server-name", "localhost", "--cluster-id", "west",
		"--ca-bundle", root.BundlePath(), "--token-file", westToken, "--out", t.TempDir()); err != nil {
		t.Fatalf("cert fetch for west from west's issuer: %v", err)
	}

	// An issuer whose root address leads to east's issuer, which serves under
	// the name it expects the root under.
	north := &issuerProc{Dir: t.TempDir(), Addr: testkit.FreeAddr(t), Cluster: "north", TrustDomain: "north.example"}
	north.config = harness.WriteFile(t, filepath.Join(t.TempDir(), "north.yaml"), "dataDir: "+north.Dir+"\nlisten: "+north.Addr+`
trustDomain: north.example
cluster: north
hosts: ["localhost"]
upstream:
  address: `+east.Addr+`
  serverName: localhost
  bundleFile: `+root.BundlePath()+`
  joinTokenFile: `+root.joinToken(t, "north", "north.example")+`
clusters:
  - name: north
    attestor: dev
`)
	north.Proc = start(t, "issuer north -> east", "issuer", "serve", "--config", north.config, "--log-level", "debug")
	north.WaitFor(t, "a refused handshake with the root", harness.StartTimeout, func() bool {
		return strings.Contains(north.Output(), "want the meshca root")
	})

	for _, line := range strings.Split(east.Output(), "\n") {
		if strings.Contains(line, "certificate request rejected") || strings.Contains(line, "certificate issued") {
			t.Errorf("a request reached east's issuer: %s", line)
		}
	}
}

// TestClientRefusesRevokedIssuer: after the root revokes west's
// intermediate, west's agent (which receives the root's CRL in the trust
// bundle) refuses west's issuer while it still serves with the revoked
// intermediate, before sending its token; so does `meshca cert fetch` given
// that CRL with --crl.
func TestClientRefusesRevokedIssuer(t *testing.T) {
	root := startRoot(t, "intermediateTTL: 1h\n")
	west := startIssuer(t, root, "west", "west.example", "")
	dir := t.TempDir()
	token := harness.WriteFile(t, filepath.Join(dir, "token"),
		mustRun(t, "dev", "token", "--data-dir", west.Dir, "--namespace", "shop", "--service-account", "web", "--ttl", "24h"))
	socket := filepath.Join(dir, "agent.sock")
	agent := start(t, "agent west", "agent", "--issuer", west.Addr, "--server-name", "localhost", "--cluster-id", "west",
		"--ca-bundle", root.BundlePath(), "--token-file", token, "--workload-socket", socket, "--ttl", "10s",
		"--health-addr", "", "--log-level", "debug")
	agent.WaitFor(t, "two certificates", harness.StartTimeout, func() bool { return strings.Count(agent.Output(), "certificate obtained") >= 2 })
	crls := watchCRLs(t, socket)
	fetch := func(extra ...string) error {
		_, err := run(t, append([]string{"cert", "fetch", "--issuer", west.Addr, "--server-name", "localhost", "--cluster-id", "west",
			"--ca-bundle", root.BundlePath(), "--token-file", token, "--out", t.TempDir()}, extra...)...)
		return err
	}

	westInter := intermediateOfSocket(t, socket)
	if err := root.admin(t, nil, "revoke", "--cluster", "west", "--reason", "key compromise"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the root CRL listing west's intermediate", harness.StartTimeout, func() bool { return crls.lists(westInter) })
	var crlPEM []byte
	crls.mu.Lock()
	for _, c := range crls.crls {
		crlPEM = append(crlPEM, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.Raw})...)
	}
	crls.mu.Unlock()
	crlFile := harness.WriteFile(t, filepath.Join(dir, "crls.pem"), string(crlPEM))
	// Without the CRL, fetch cannot know: the revoked issuer still serves.
	if err := fetch(); err != nil {
		t.Fatalf("cert fetch without the CRL: %v", err)
	}
	if err := fetch("--crl", crlFile); err == nil || !strings.Contains(err.Error(), "is revoked") {
		t.Fatalf("cert fetch --crl from the revoked issuer: %v, want a refused handshake", err)
	}
	agent.WaitFor(t, "a refused handshake with the revoked issuer", harness.StartTimeout, func() bool {
		return strings.Contains(agent.Output(), "is revoked")
	})
	issued := strings.Count(west.Output(), "certificate issued")
	// Renewals go on failing: the revoked issuer sees no more requests.
	before := strings.Count(agent.Output(), "is revoked")
	agent.WaitFor(t, "another refused renewal", harness.StartTimeout, func() bool {
		return strings.Count(agent.Output(), "is revoked") > before
	})
	if now := strings.Count(west.Output(), "certificate issued"); now != issued {
		t.Errorf("the revoked issuer issued %d more certificates to the agent", now-issued)
	}
}

// intermediateOfSocket returns the serial (hex) of the intermediate above
// the SVID the agent on socket serves.
func intermediateOfSocket(t *testing.T, socket string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), harness.StartTimeout)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil || len(svid.Certificates) < 2 {
		t.Fatalf("SVID from %s: %v", socket, err)
	}
	return svid.Certificates[1].SerialNumber.Text(16)
}
