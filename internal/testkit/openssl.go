package testkit

import (
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshca/meshca/trust"
)

// OpenSSL returns the path of the openssl binary. Without one the test
// fails under CI=true (the machine set-up installs it) and is skipped
// otherwise.
func OpenSSL(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatal("openssl not found")
		}
		tb.Skip("openssl not found")
	}
	return bin
}

// OpenSSLVerify runs `openssl verify -CAfile ANCHORS [-untrusted CHAIN]
// [-attime AT] LEAF`: anchors are the only trusted certificates, chain the
// untrusted ones (none: no -untrusted), at the verification time (zero:
// now). It returns openssl's output, and an error unless openssl accepted
// the leaf.
func OpenSSLVerify(tb testing.TB, anchors, chain []*x509.Certificate, leaf *x509.Certificate, at time.Time) (string, error) {
	tb.Helper()
	bin, dir := OpenSSL(tb), tb.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, trust.EncodeCertificates(certs...), 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	leafFile := write("leaf.pem", leaf)
	args := []string{"verify", "-CAfile", write("anchors.pem", anchors...)}
	if len(chain) > 0 {
		args = append(args, "-untrusted", write("chain.pem", chain...))
	}
	if !at.IsZero() {
		args = append(args, "-attime", strconv.FormatInt(at.Unix(), 10))
	}
	out, err := exec.Command(bin, append(args, leafFile)...).CombinedOutput()
	if err == nil && string(out) != leafFile+": OK\n" {
		err = errors.New("unexpected output")
	}
	return string(out), err
}
