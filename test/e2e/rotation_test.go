package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
)

// rotationDeadline bounds TestDevRotatesIntermediate: with 30 s
// intermediates (60 s of life with the 30 s backdating) two rotations take
// well under a minute.
const rotationDeadline = 3 * time.Minute

// TestDevRotatesIntermediate runs meshca dev with 30 s intermediates and
// fetches certificates back to back until they came from three
// intermediates (two rotations): not one fetch may fail, every chain ends
// at the dev root, and the serving certificate moves with the intermediate.
func TestDevRotatesIntermediate(t *testing.T) {
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "dev.yaml"), "intermediateTTL: 30s\nleafTTL: 1h\nleafMinTTL: 1s\n")
	srv := startDev(t, devOptions{Dir: work, Args: []string{"--config", filepath.Join(work, "dev.yaml")}})
	_, tokenFile := mintToken(t, work, "token.jwt")
	roots, err := pemutil.ReadCertificateBundle(srv.BundlePath())
	if err != nil || len(roots) != 1 {
		t.Fatalf("bundle.pem: %d roots, %v", len(roots), err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])

	issuedBy := map[string]bool{}  // intermediates of issued certificates, by serial
	servingBy := map[string]bool{} // intermediates of the serving certificate
	fetches := 0
	for deadline := time.Now().Add(rotationDeadline); len(issuedBy) < 3; fetches++ {
		if time.Now().After(deadline) {
			t.Fatalf("certificates from %d intermediates after %v and %d fetches, want 3\n%s", len(issuedBy), rotationDeadline, fetches, srv.Output())
		}
		out := filepath.Join(work, "certs")
		if r := fetchCert(t, srv, tokenFile, out); r.code != 0 {
			t.Fatalf("fetch %d (after certificates from %d intermediates) failed: %s\nserver:\n%s", fetches, len(issuedBy), r, srv.Output())
		}
		chain, err := pemutil.ReadCertificateBundle(filepath.Join(out, "cert.pem"))
		if err != nil || len(chain) != 2 {
			t.Fatalf("fetch %d: cert.pem holds %d certificates, want leaf and intermediate (%v)", fetches, len(chain), err)
		}
		if !chain[1].IsCA || chain[1].CheckSignatureFrom(roots[0]) != nil || chain[0].CheckSignatureFrom(chain[1]) != nil {
			t.Fatalf("fetch %d: the chain does not end at the dev root", fetches)
		}
		if chain[1].NotAfter.After(roots[0].NotAfter) {
			t.Fatalf("fetch %d: the intermediate outlives the root", fetches)
		}
		issuedBy[chain[1].SerialNumber.String()] = true
		servingBy[servingIntermediate(t, srv.Addr, pool)] = true
	}
	if len(servingBy) < 2 {
		t.Errorf("the serving certificate came from %d intermediates while issued ones came from %d", len(servingBy), len(issuedBy))
	}
	t.Logf("%d fetches, certificates from %d intermediates, serving certificates from %d", fetches, len(issuedBy), len(servingBy))
}

// servingIntermediate connects to addr, verifying the serving certificate
// against roots, and returns the serial of the intermediate that signed it.
func servingIntermediate(t *testing.T, addr string, roots *x509.CertPool) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS to the issuer: %v", err)
	}
	defer conn.Close()
	chains := conn.ConnectionState().VerifiedChains
	if len(chains) == 0 || len(chains[0]) != 3 {
		t.Fatalf("serving certificate chain %v, want leaf, intermediate and root", chains)
	}
	return chains[0][1].SerialNumber.String()
}
