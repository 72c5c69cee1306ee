package root_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// RunStack serves a root in-process: it writes bundle.pem and
// bundle.spiffe.json with the roots in the bundle, and stops cleanly.
func TestRunStackWritesBundleFiles(t *testing.T) {
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("mesh.example")
	serving := make(chan string, 1)
	cfg := root.StackConfig{
		Root:    root.Config{Keys: root.FileKeys{Dir: dir}, Hosts: []string{"127.0.0.1"}},
		DataDir: dir, Listen: "127.0.0.1:0", BundleTrustDomain: td,
		OpenStore: func(ctx context.Context) (root.StackStore, error) {
			return sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "meshca.db")})
		},
		Serving: func(addr, _ string) { serving <- addr },
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- root.RunStack(ctx, cfg) }()
	select {
	case <-serving:
	case err := <-done:
		t.Fatalf("RunStack returned before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("root not serving after 30s")
	}
	// Both files are in place before the root listens.
	pemData, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		cancel()
		<-done
		t.Fatalf("bundle.pem once serving: %v", err)
	}
	roots, err := trust.ParseBundle(pemData)
	if err != nil || len(roots.Roots()) != 1 {
		t.Fatalf("bundle.pem: %v roots, %v", roots, err)
	}
	sb, err := spiffebundle.Load(td, filepath.Join(dir, "bundle.spiffe.json"))
	if err != nil || len(sb.X509Authorities()) != 1 || !sb.X509Authorities()[0].Equal(roots.Roots()[0]) {
		t.Fatalf("bundle.spiffe.json: %v, %v", sb, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunStack: %v", err)
	}
}

func TestStackConfigValidate(t *testing.T) {
	open := func(context.Context) (root.StackStore, error) { return nil, nil }
	for _, tc := range []struct {
		name string
		cfg  root.StackConfig
	}{
		{"no data dir", root.StackConfig{OpenStore: open}},
		{"no store", root.StackConfig{DataDir: "/d"}},
		{"admin mTLS without admins", root.StackConfig{DataDir: "/d", OpenStore: open, AdminTLSListen: ":1"}},
		{"endpoint without trust domain", root.StackConfig{DataDir: "/d", OpenStore: open, Endpoint: &root.Endpoint{Listen: ":1"}}},
	} {
		if err := tc.cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", tc.name)
		}
	}
}
