package e2e

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store/postgres/pgtest"
)

// TestStandaloneReplicasShareOneRoot runs `meshca issuer serve` replicas
// with local file roots on one PostgreSQL database. The first records its
// root in the store. A replica with its own empty root.dir, or with another
// root, exits non-zero naming the fingerprints and the fix, and creates no
// key. A replica mounting the same root.dir read-only starts, and a
// certificate it issues verifies against the first replica's bundle.pem.
func TestStandaloneReplicasShareOneRoot(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	work := t.TempDir()
	shared := mkdir(t, filepath.Join(work, "shared-root"))
	first := startIssuer(t, work, "r1", shared, dsn)
	sharedFP := rootFileFingerprint(t, shared)

	const advice = "mount the same root key in every replica (root.dir), e.g. from one Kubernetes Secret"
	empty := mkdir(t, filepath.Join(work, "empty-root"))
	cfg, _ := issuerConfig(t, work, "r2", empty, dsn)
	r := runWithin(t, configExitTimeout, work, meshcaBin, "issuer", "serve", "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, sharedFP) || !strings.Contains(r.stderr, advice) {
		t.Fatalf("replica with an empty root.dir: want a non-zero exit naming root %s and %q, got %s", sharedFP, advice, r)
	}
	if names := dirEntries(t, empty); len(names) != 0 {
		t.Fatalf("the refused replica created %q in its root.dir", names)
	}

	other := mkdir(t, filepath.Join(work, "other-root"))
	if _, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: other}); err != nil {
		t.Fatal(err)
	}
	otherFP := rootFileFingerprint(t, other)
	cfg, _ = issuerConfig(t, work, "r3", other, dsn)
	r = runWithin(t, configExitTimeout, work, meshcaBin, "issuer", "serve", "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, sharedFP) || !strings.Contains(r.stderr, otherFP) || !strings.Contains(r.stderr, advice) {
		t.Fatalf("replica with another root: want a non-zero exit naming %s, %s and %q, got %s", sharedFP, otherFP, advice, r)
	}

	// As a Secret volume: read-only, files 0400.
	for _, name := range []string{ca.RootKeyFile, ca.RootCertFile, ""} {
		mode := os.FileMode(0o400)
		if name == "" {
			mode = 0o500
		}
		if err := os.Chmod(filepath.Join(shared, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = os.Chmod(shared, 0o700) })
	second := startIssuer(t, work, "r4", shared, dsn)
	_, tokenFile := mintToken(t, work, "token", "--data-dir", second.DataDir)
	out := filepath.Join(work, "cert")
	mustSucceed(t, "cert fetch from the second replica", fetchCert(t, second, tokenFile, out))
	chain, err := pemutil.ReadCertificateBundle(filepath.Join(out, "cert.pem"))
	if err != nil || len(chain) < 2 {
		t.Fatalf("cert.pem: %d certificates, %v", len(chain), err)
	}
	firstRoots, err := pemutil.ReadCertificateBundle(first.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	pool, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range firstRoots {
		pool.AddCert(c)
	}
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters}); err != nil {
		t.Fatalf("a certificate from the second replica does not verify against the first's bundle.pem: %v", err)
	}
	second.Stop(t, syscall.SIGTERM)
	first.Stop(t, syscall.SIGTERM)
}

// startIssuer starts `meshca issuer serve` with data dir work/name, the
// given root.dir and the store at dsn.
func startIssuer(t *testing.T, work, name, rootDir, dsn string) *devServer {
	t.Helper()
	cfg, addr := issuerConfig(t, work, name, rootDir, dsn)
	srv, err := launchServer(t, "meshca issuer", work, addr, filepath.Join(work, name), []string{"issuer", "serve", "--config", cfg})
	if err != nil {
		t.Fatalf("start meshca issuer %s: %v", name, err)
	}
	return srv
}

// issuerConfig writes work/name.yaml: a standalone issuer of cluster dev
// with the dev attestor, data dir work/name, root.dir rootDir and the
// PostgreSQL store at dsn, listening on the returned address.
func issuerConfig(t *testing.T, work, name, rootDir, dsn string) (path, addr string) {
	t.Helper()
	addr = testkit.FreeAddr(t)
	path = filepath.Join(work, name+".yaml")
	writeFile(t, path, "dataDir: "+filepath.Join(work, name)+"\nlisten: "+addr+
		"\ncluster: dev\nclusters:\n  - name: dev\n    attestor: dev\nroot:\n  dir: "+rootDir+
		"\nstore:\n  dsn: '"+dsn+"'\n")
	return path, addr
}

// rootFileFingerprint is the hex SHA-256 of the DER of dir/root.pem.
func rootFileFingerprint(t *testing.T, dir string) string {
	t.Helper()
	cert, err := pemutil.ReadCertificate(filepath.Join(dir, ca.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
