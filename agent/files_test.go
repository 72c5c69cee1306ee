package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// The files are what istiod reads with --tlsCertFile, --tlsKeyFile and
// --caCertFile: a key pair tls.X509KeyPair accepts (as istiod's
// loadIstiodCert), the key private to the agent's user, the roots. A
// renewal replaces each file by a rename: a reader holding the old file
// still reads it whole, and no temporary file is left behind.
func TestWriteFilesForIstiod(t *testing.T) {
	tree := testkit.New(t, testkit.Options{WorkloadDNSNames: []string{"istiod.istio-system.svc"}})
	svid := func() *SVID {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := tree.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{webID.URL()},
			DNSNames: []string{"istiod.istio-system.svc"}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return &SVID{Chain: []*x509.Certificate{leaf, tree.Intermediate.Certificate}, Key: key, Roots: tree.Bundle.Roots()}
	}
	dir := filepath.Join(t.TempDir(), "out")
	first := svid()
	if err := WriteFiles(dir, first); err != nil {
		t.Fatal(err)
	}
	check := func(want *SVID) {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
		if err != nil {
			t.Fatalf("istiod would not load the key pair: %v", err)
		}
		if len(pair.Certificate) != 2 || !pair.Leaf.Equal(want.Chain[0]) {
			t.Fatalf("cert.pem holds %d certificates, leaf %v: want the leaf then the intermediate", len(pair.Certificate), pair.Leaf.SerialNumber)
		}
		if fi, err := os.Stat(filepath.Join(dir, keyFile)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key.pem mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
	}
	check(first)
	held, err := os.Open(filepath.Join(dir, certFile))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	before, _ := os.Stat(filepath.Join(dir, certFile))

	second := svid()
	if err := WriteFiles(dir, second); err != nil {
		t.Fatal(err)
	}
	check(second)
	after, _ := os.Stat(filepath.Join(dir, certFile))
	if os.SameFile(before, after) {
		t.Error("cert.pem was rewritten in place, not replaced")
	}
	old, err := io.ReadAll(held)
	if err != nil || !bytes.Equal(old, trust.EncodeCertificates(first.Chain...)) {
		t.Fatalf("the replaced cert.pem is not readable whole by its reader: %d bytes, %v", len(old), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("output directory holds %d entries, want cert.pem, key.pem, bundle.pem only", len(entries))
	}
}
