package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store/sqlite"
)

// testIssuer is meshca's real issuer — TLS gRPC on loopback, JWKS
// attestation of dev tokens, SQLite — that a test can stop and start again
// on the same address. Leaves may live as little as one second.
type testIssuer struct {
	tree       *testkit.Tree
	iss        *issuer.Issuer
	signer     *attest.DevSigner
	addr       string // fixed by the first start
	bundleFile string
	stopServe  func()
}

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	dir := t.TempDir()
	ti := &testIssuer{tree: testkit.New(t, testkit.Options{}), bundleFile: filepath.Join(dir, "bundle.pem")}
	var err error
	if ti.signer, err = attest.LoadOrCreateDevSigner(dir); err != nil {
		t.Fatal(err)
	}
	jwks, err := attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: ti.signer.KeySet()}, Cluster: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "meshca.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ti.iss, err = issuer.New(issuer.Config{
		TrustDomain: ti.tree.TrustDomain, Cluster: "dev", Authority: ti.tree.Intermediate, Bundle: ti.tree.Bundle,
		Attestor: jwks, Recorder: db, Logger: discardLogger(),
		DefaultTTL: time.Hour, MinTTL: time.Second, MaxTTL: 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ti.bundleFile, ti.tree.Bundle.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	ti.start(t)
	return ti
}

// start serves on a new listener: 127.0.0.1:0 the first time, the same
// address afterwards.
func (ti *testIssuer) start(t *testing.T) {
	t.Helper()
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: ti.iss, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := ti.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ti.addr = lis.Addr().String()
	ti.stopServe = testkit.Go(t, "issuer Serve", func(ctx context.Context) error { return srv.Serve(ctx, lis) })
}

// stop stops serving (the listener is closed, connections are dropped).
func (ti *testIssuer) stop(t *testing.T) {
	t.Helper()
	ti.stopServe()
	ti.stopServe = nil
}

// tokenFile writes a dev token for default/web into a new file.
func (ti *testIssuer) tokenFile(t *testing.T) string {
	t.Helper()
	tok, err := ti.signer.Mint(attest.TokenSpec{Namespace: "default", ServiceAccount: "web", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClientWatchBundleSendsItsToken watches the real issuer's bundle: it
// refuses a watch without a workload credential, so the client sends the
// token of its TokenFile.
func TestClientWatchBundleSendsItsToken(t *testing.T) {
	ti := newTestIssuer(t)
	for _, tc := range []struct {
		name      string
		tokenFile string
		want      codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"token file", ti.tokenFile(t), codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(ClientConfig{Address: ti.addr, Roots: ti.tree.Bundle, TokenFile: tc.tokenFile})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			stream, err := c.WatchBundle(ctx, 0)
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tc.want {
				t.Fatalf("watch: %v, want %v", err, tc.want)
			}
		})
	}
}
