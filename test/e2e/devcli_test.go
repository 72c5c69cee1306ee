package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevTokenNeedsTheServersSigner runs `meshca dev token` where no meshca
// dev ever ran: it must refuse and say where it looked, not mint a token
// with a new key that the running server would refuse.
func TestDevTokenNeedsTheServersSigner(t *testing.T) {
	srv := startDev(t, devOptions{})
	elsewhere := t.TempDir()
	r := runMeshca(t, elsewhere, "dev", "token", "--namespace", "default", "--service-account", "web")
	if r.code == 0 || r.stdout != "" {
		t.Fatalf("meshca dev token without a dev signer printed a token: %s", r)
	}
	const want = "no dev signer at ./.meshca-dev (is meshca dev running there? set --data-dir)"
	if !strings.Contains(r.stderr, want) {
		t.Errorf("refusal does not say %q: %s", want, r)
	}
	if names := dirEntries(t, elsewhere); len(names) != 0 {
		t.Errorf("meshca dev token created %q", names)
	}

	// Pointed at the server's data dir, the token works.
	_, tokenFile := mintToken(t, elsewhere, "token", "--data-dir", srv.DataDir)
	mustSucceed(t, "cert fetch with the server's dev signer", fetchCert(t, srv, tokenFile, filepath.Join(elsewhere, "certs")))
}

// TestDevHostAddsAServingName starts meshca dev with --host: the name is
// added to the defaults, so the default names keep working and the next
// steps the banner prints work when pasted. With hosts from a config file
// (which replace the defaults), the banner's steps match them.
func TestDevHostAddsAServingName(t *testing.T) {
	requireOpenSSL(t)
	t.Run("--host", func(t *testing.T) {
		srv := startDev(t, devOptions{Args: []string{"--host", "meshca.test"}})
		checkBannerSteps(t, srv)
		checkServingNames(t, srv, "meshca.test", "127.0.0.1", "::1", "localhost", "istiod.istio-system.svc")
	})
	t.Run("config hosts", func(t *testing.T) {
		work := t.TempDir()
		writeFile(t, filepath.Join(work, "dev.yaml"), "hosts: [\"meshca.test\"]\n")
		srv := startDev(t, devOptions{Dir: work, Args: []string{"--config", "dev.yaml"}})
		checkBannerSteps(t, srv)
		checkServingNames(t, srv, "meshca.test")
	})
}

// checkServingNames completes a TLS handshake with srv for every name,
// checking its serving certificate against its bundle.
func checkServingNames(t *testing.T, srv *devServer, names ...string) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(readFile(t, srv.BundlePath())) {
		t.Fatalf("no certificates in %s", srv.BundlePath())
	}
	for _, name := range names {
		dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
			Config: &tls.Config{RootCAs: roots, ServerName: name, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}}
		conn, err := dialer.Dial("tcp", srv.Addr)
		if err != nil {
			t.Errorf("TLS handshake with server name %q: %v", name, err)
			continue
		}
		conn.Close()
	}
}
