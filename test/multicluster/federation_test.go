package multicluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
)

// TestFederatedMeshes runs two meshes with their own roots and trust
// domains (a.example, b.example). Each root serves a SPIFFE bundle endpoint
// (A with https_spiffe, B with https_web) and federates with the other;
// after the exchange the federated bundles reach the agents, and a workload
// of A and one of B complete mutual TLS.
func TestFederatedMeshes(t *testing.T) {
	fedA, fedB := testkit.FreeAddr(t), testkit.FreeAddr(t)
	webCA, webCert, webKey := webPKI(t, t.TempDir())

	rootA := startRoot(t, fmt.Sprintf(`federation:
  listen: %s
  trustDomain: a.example
  profile: https_spiffe
  refreshInterval: 2s
  federatesWith:
    - trustDomain: b.example
      url: https://%s
      profile: https_web
      caCertFile: %s
`, fedA, fedB, webCA))
	rootA.WaitListening(t, fedA)
	bundleA := filepath.Join(rootA.Dir, "bundle.spiffe.json")
	if _, err := os.Stat(bundleA); err != nil {
		t.Fatalf("root A wrote no SPIFFE bundle for federation: %v", err)
	}
	rootB := startRoot(t, fmt.Sprintf(`federation:
  listen: %s
  trustDomain: b.example
  profile: https_web
  certFile: %s
  keyFile: %s
  refreshInterval: 2s
  federatesWith:
    - trustDomain: a.example
      url: https://%s
      profile: https_spiffe
      bundleFile: %s
`, fedB, webCert, webKey, fedA, bundleA))
	rootB.WaitListening(t, fedB)

	issuerA := startIssuer(t, rootA, "a1", "a.example", "")
	issuerB := startIssuer(t, rootB, "b1", "b.example", "")
	wa := startWorkload(t, issuerA, rootA.BundlePath(), "pay", "api", time.Minute)
	wb := startWorkload(t, issuerB, rootB.BundlePath(), "bank", "gateway", time.Minute)

	waitUntil(t, "b.example's bundle at A's workload", 60*time.Second, func() bool {
		got := bundleRoots(t, wa, "b.example")
		return len(got) > 0 && slices.Equal(got, bundleRoots(t, wb, "b.example"))
	})
	waitUntil(t, "a.example's bundle at B's workload", 60*time.Second, func() bool {
		got := bundleRoots(t, wb, "a.example")
		return len(got) > 0 && slices.Equal(got, bundleRoots(t, wa, "a.example"))
	})
	probe := startProbe(t, wb, wa, 50*time.Millisecond)
	waitUntil(t, "federated handshakes", 30*time.Second, func() bool { ok, _, _ := probe.counts(); return ok >= 20 })
	probe.halt()
	checkProbeMin(t, probe, "federation", 20)
}

func checkProbeMin(t *testing.T, p *mtlsProbe, phase string, min int) {
	t.Helper()
	ok, fail, errs := p.counts()
	if fail != 0 || ok < min {
		t.Fatalf("%s: %d ok, %d failed; first errors:\n%v", phase, ok, fail, errs)
	}
}

// webPKI writes a CA and a server certificate for 127.0.0.1 and localhost,
// standing in for the web PKI of an https_web bundle endpoint.
func webPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test web CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile = harness.WriteFile(t, filepath.Join(dir, "web-ca.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	certFile = harness.WriteFile(t, filepath.Join(dir, "web.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = harness.WriteFile(t, filepath.Join(dir, "web-key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return caFile, certFile, keyFile
}
