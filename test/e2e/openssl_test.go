package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireOpenSSL skips the test when openssl is missing, unless CI=true, where
// a missing openssl is a broken test bed and fails the test.
func requireOpenSSL(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl is required and CI=true: %v", err)
		}
		t.Skipf("openssl not found (%v); `make test` installs it (Debian package openssl)", err)
	}
}

// openssl runs openssl with args and returns its stdout, failing the test on
// a non-zero exit.
func openssl(t testing.TB, args ...string) string {
	t.Helper()
	r := runWithin(t, commandTimeout, "", "openssl", args...)
	if r.code != 0 {
		t.Fatalf("openssl %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// certWant is what a fetched certificate directory must hold.
type certWant struct {
	// ID is the only URI SAN the leaf must carry.
	ID string
	// TTL is the expected lifetime: NotAfter is within a minute of now+TTL.
	TTL time.Duration
	// KeyType is the --key-type used: "ec-p256" or "rsa-2048".
	KeyType string
	// Bundle is the server's bundle.pem; the fetched bundle.pem must equal it.
	Bundle string
}

const workloadID = "spiffe://cluster.local/ns/default/sa/web"

// checkFetched checks dir/{cert,key,bundle}.pem with openssl, as a user
// would before handing them to a proxy.
func checkFetched(t testing.TB, dir string, want certWant) {
	t.Helper()
	cert := filepath.Join(dir, "cert.pem")
	key := filepath.Join(dir, "key.pem")
	bundle := filepath.Join(dir, "bundle.pem")

	// cert.pem holds the leaf first, then the intermediates: verifying its
	// first certificate with the rest as untrusted intermediates must reach
	// the root in bundle.pem.
	if out := openssl(t, "verify", "-CAfile", bundle, "-untrusted", cert, cert); !strings.Contains(out, cert+": OK") {
		t.Errorf("openssl verify printed %q, want %q", out, cert+": OK")
	}
	if got, wantBundle := readFile(t, bundle), readFile(t, want.Bundle); !bytes.Equal(got, wantBundle) {
		t.Errorf("fetched bundle.pem differs from the server's %s:\n%s\nwant:\n%s", want.Bundle, got, wantBundle)
	}

	san := openssl(t, "x509", "-in", cert, "-noout", "-ext", "subjectAltName")
	if uris := uriSANs(san); len(uris) != 1 || uris[0] != want.ID {
		t.Errorf("leaf URI SANs = %q, want exactly [%q]; openssl printed:\n%s", uris, want.ID, san)
	}

	notAfter := parseEndDate(t, openssl(t, "x509", "-in", cert, "-noout", "-enddate"))
	if got := time.Until(notAfter); got < want.TTL-time.Minute || got > want.TTL+time.Minute {
		t.Errorf("leaf expires in %v (notAfter %v), want %v ± 1m", got.Round(time.Second), notAfter, want.TTL)
	}

	keyPEM := readFile(t, key)
	if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("key.pem is not an unencrypted PKCS#8 PEM (BEGIN PRIVATE KEY); first line: %q", firstLine(keyPEM))
	}
	if fi, err := os.Stat(key); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode = %v, want 0600", fi.Mode().Perm())
	}
	openssl(t, "pkey", "-in", key, "-noout")
	keyText := openssl(t, "pkey", "-in", key, "-noout", "-text")
	wantText := map[string]string{"ec-p256": "ASN1 OID: prime256v1", "rsa-2048": "Private-Key: (2048 bit"}[want.KeyType]
	if wantText == "" {
		t.Fatalf("unknown key type %q", want.KeyType)
	}
	if !strings.Contains(keyText, wantText) {
		t.Errorf("key.pem is not %s: openssl pkey -text does not contain %q:\n%s", want.KeyType, wantText, firstLines(keyText, 3))
	}

	certPub := openssl(t, "x509", "-in", cert, "-noout", "-pubkey")
	keyPub := openssl(t, "pkey", "-in", key, "-pubout")
	if !strings.Contains(certPub, "-----BEGIN PUBLIC KEY-----") || certPub != keyPub {
		t.Errorf("the key in key.pem does not match cert.pem:\ncert public key:\n%s\nkey.pem public key:\n%s", certPub, keyPub)
	}
}

// uriSANs picks the URI: entries out of `openssl x509 -ext subjectAltName`.
func uriSANs(out string) []string {
	var uris []string
	for _, line := range strings.Split(out, "\n") {
		for _, entry := range strings.Split(line, ",") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(entry), "URI:"); ok {
				uris = append(uris, v)
			}
		}
	}
	return uris
}

// parseEndDate parses `openssl x509 -noout -enddate` output, such as
// "notAfter=Nov  3 16:46:30 2026 GMT".
func parseEndDate(t testing.TB, out string) time.Time {
	t.Helper()
	v, ok := strings.CutPrefix(strings.TrimSpace(out), "notAfter=")
	v, gmt := strings.CutSuffix(v, " GMT")
	if !ok || !gmt {
		t.Fatalf("openssl -enddate printed %q, want notAfter=... GMT", out)
	}
	at, err := time.Parse("Jan _2 15:04:05 2006", v)
	if err != nil {
		t.Fatalf("parse openssl -enddate %q: %v", out, err)
	}
	return at
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
