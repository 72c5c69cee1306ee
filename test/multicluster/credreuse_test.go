package multicluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshca/meshca/trust"
	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
)

// TestCopiedIssuerCredential copies an enrolled issuer's credential
// directory to a second issuer process of the same cluster. Both start and
// renew with the root; the root accepts only the newest credential of the
// cluster (and its predecessor until the newest is used), so the party
// left behind presents a replaced credential: the root refuses it, logs
// and audits the reuse, and revokes every credential of the cluster, so
// that neither process can renew until the cluster enrols again. Then
// `meshca admin revoke --serial` on the root's socket refuses the new
// credential at once.
func TestCopiedIssuerCredential(t *testing.T) {
	root := startRoot(t, "")
	east := startIssuer(t, root, "east", "east.example", "")
	east.Stop(t)

	thief := &issuerProc{Dir: t.TempDir(), Addr: testkit.FreeAddr(t), Cluster: "east", TrustDomain: "east.example"}
	copyDir(t, filepath.Join(east.Dir, "credential"), filepath.Join(thief.Dir, "credential"))
	cfg, err := os.ReadFile(east.config)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(strings.Replace(string(cfg), "dataDir: "+east.Dir, "dataDir: "+thief.Dir, 1),
		"listen: "+east.Addr, "listen: "+thief.Addr, 1)
	thief.config = harness.WriteFile(t, filepath.Join(t.TempDir(), "thief.yaml"), body)
	// The copy renews twice (a start each): the root moves on to the
	// copy's credentials.
	thief.restart(t)
	thief.Stop(t)
	thief.restart(t)
	thief.Stop(t)

	refused := func(is *issuerProc, what string) {
		t.Helper()
		p := start(t, what, "issuer", "serve", "--config", is.config, "--log-level", "debug")
		<-p.Done()
		if p.Err() == nil || !strings.Contains(p.Output(), "rejected by the root") {
			t.Fatalf("%s: exit %v, want the root to reject its credential\n%s", what, p.Err(), p.Output())
		}
	}
	refused(east, "the original issuer with the credential the copy replaced")
	root.WaitFor(t, "the reuse alarm", harness.StartTimeout, func() bool {
		return strings.Contains(root.Output(), "credential reuse")
	})
	audit := mustRun(t, "admin", "--socket", root.Socket, "-o", "json", "audit", "list")
	if !strings.Contains(audit, "credential.reuse") {
		t.Fatalf("no credential.reuse audit event:\n%s", audit)
	}
	refused(thief, "the copy after the reuse")

	// The administrator re-enrols the real issuer with a new join token.
	token := root.joinToken(t, "east", "east.example")
	if err := os.RemoveAll(filepath.Join(east.Dir, "credential")); err != nil {
		t.Fatal(err)
	}
	cfg, err = os.ReadFile(east.config)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(cfg), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "joinTokenFile:") {
			lines[i] = "  joinTokenFile: " + token
		}
	}
	if err := os.WriteFile(east.config, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	east.restart(t)
	east.Stop(t)
	refused(thief, "the copy after the new enrolment")
	east.restart(t)
	east.Stop(t)

	// Revoking the new credential by serial on the root's socket.
	cred, err := os.ReadFile(filepath.Join(east.Dir, "credential", "credential.pem"))
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, "admin", "--socket", root.Socket, "revoke", "--serial", credentialSerial(t, cred), "--reason", "key compromise")
	refused(east, "the issuer with a revoked credential")
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func credentialSerial(t *testing.T, pemData []byte) string {
	t.Helper()
	certs, err := pemutil.ParseCertificateBundle(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return trust.SerialHex(certs[0].SerialNumber)
}
