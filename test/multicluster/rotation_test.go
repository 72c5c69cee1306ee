package multicluster

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/vaulttest"
)

// Lifetimes short enough to watch several rotations in a few minutes:
// intermediates of 90 s are prepared at 45 s left and swapped at 15 s left;
// leaves live 20 s and are renewed at about half-life.
const (
	testIntermediateTTL = 90 * time.Second
	testLeafTTL         = 20 * time.Second
	testPropagation     = 6 * time.Second
)

// vaultRootConfig is the YAML of a root whose keys live in Vault Transit.
func vaultRootConfig(t *testing.T, v *vaulttest.Server) string {
	t.Helper()
	return vaultKeyConfig(t, v) + fmt.Sprintf(`intermediateTTL: %s
rotation:
  auto: false
  propagationDelay: %s
`, testIntermediateTTL, testPropagation)
}

// vaultKeyConfig is the `key:` YAML of a root whose keys live in Vault
// Transit under a prefix of the test's own.
func vaultKeyConfig(t *testing.T, v *vaulttest.Server) string {
	t.Helper()
	tokenFile := harness.WriteFile(t, filepath.Join(t.TempDir(), "vault-token"), v.Token)
	return fmt.Sprintf(`key:
  kind: vault
  vault:
    address: %s
    keyPrefix: %s
    timeout: 5s
    auth:
      method: token
      tokenFile: %s
`, v.Addr, vaulttest.KeyName(t), tokenFile)
}

// TestEastWestThroughRotations runs mutual TLS between a workload of
// cluster east (trust domain east.example) and one of west (west.example),
// both under one Vault-backed root, continuously while the intermediates
// rotate and then while the root rotates. Not one handshake may fail.
func TestEastWestThroughRotations(t *testing.T) {
	v := vaulttest.Shared(t)
	root := startRoot(t, vaultRootConfig(t, v))
	east := startIssuer(t, root, "east", "east.example", "")
	west := startIssuer(t, root, "west", "west.example", "")
	client := startWorkload(t, east, root.BundlePath(), "shop", "frontend", testLeafTTL)
	server := startWorkload(t, west, root.BundlePath(), "shop", "backend", testLeafTTL)

	firstRoot := activeRoot(t, root)
	probe := startProbe(t, server, client, 50*time.Millisecond)

	// Intermediates: 90 s each; after ~100 s both issuers have swapped at
	// least once.
	eastInter := intermediateOf(t, client)
	waitUntil(t, "east swaps its intermediate", 150*time.Second, func() bool { return intermediateOf(t, client) != eastInter })
	westInter := intermediateOf(t, server)
	waitUntil(t, "west swaps its intermediate", 150*time.Second, func() bool { return intermediateOf(t, server) != westInter })
	checkProbe(t, probe, "intermediate rotation")

	// Root rotation: the new root is prepared, then active after the
	// propagation delay; the issuers move under it; the old root leaves the
	// bundle once nothing under it is valid.
	if err := root.admin(t, nil, "root", "rotate"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a second root in the workloads' bundles", 30*time.Second, func() bool { return len(bundleRoots(t, client, "east.example")) == 2 })
	waitUntil(t, "the new root active", 60*time.Second, func() bool { r := activeRoot(t, root); return r != "" && r != firstRoot })
	newRoot := activeRoot(t, root)
	waitUntil(t, "east's certificate under the new root", 120*time.Second, func() bool { return rootOf(t, client) == newRoot })
	waitUntil(t, "west's certificate under the new root", 120*time.Second, func() bool { return rootOf(t, server) == newRoot })
	waitUntil(t, "the old root out of the bundle", 3*testIntermediateTTL, func() bool {
		roots := bundleRoots(t, server, "west.example")
		return len(roots) == 1 && roots[0] == newRoot
	})
	checkProbe(t, probe, "root rotation")
	probe.halt()
	ok, fail, _ := probe.counts()
	t.Logf("handshakes: %d ok, %d failed", ok, fail)
}

func checkProbe(t *testing.T, p *mtlsProbe, phase string) {
	t.Helper()
	ok, fail, errs := p.counts()
	if fail != 0 {
		t.Fatalf("%s: %d of %d handshakes failed; first errors:\n%v", phase, fail, ok+fail, errs)
	}
	if ok < 100 {
		t.Fatalf("%s: only %d handshakes", phase, ok)
	}
	t.Logf("%s: %d handshakes, none failed", phase, ok)
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func activeRoot(t *testing.T, r *rootProc) string {
	for _, ri := range r.roots(t) {
		if ri.State == "active" {
			return ri.SHA256
		}
	}
	return ""
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// intermediateOf is the fingerprint of the intermediate that signed the
// workload's current certificate.
func intermediateOf(t *testing.T, w *workload) string {
	t.Helper()
	svid, err := w.Source.GetX509SVID()
	if err != nil || len(svid.Certificates) < 2 {
		t.Fatalf("%s: no SVID with an intermediate: %v", w.ID, err)
	}
	return fingerprint(svid.Certificates[1])
}

// rootOf is the fingerprint of the root the workload's certificate chains
// to, among its own trust domain's bundle.
func rootOf(t *testing.T, w *workload) string {
	t.Helper()
	svid, err := w.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Source.GetX509BundleForTrustDomain(w.ID.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range b.X509Authorities() {
		pool.AddCert(r)
	}
	inters := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inters.AddCert(c)
	}
	chains, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		t.Fatalf("%s: own certificate does not verify against own bundle: %v", w.ID, err)
	}
	c := chains[0]
	return fingerprint(c[len(c)-1])
}

// bundleRoots lists the fingerprints of the roots w's agent serves for td.
func bundleRoots(t *testing.T, w *workload, td string) []string {
	t.Helper()
	b, err := w.Source.GetX509BundleForTrustDomain(mustTD(td))
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range b.X509Authorities() {
		out = append(out, fingerprint(r))
	}
	return out
}
