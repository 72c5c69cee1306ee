package stack_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/test/steptest"
	"github.com/meshca/meshca/trust"
)

// pkiStackConfig is a standalone stack attesting dev tokens whose root key
// in rootDir an upstream PKI certifies, over the SQLite store at dbPath.
func pkiStackConfig(t *testing.T, up upstream.Config, dbPath, rootDir string) (stack.Config, *opsStack) {
	t.Helper()
	dir := t.TempDir()
	signer, err := attest.LoadOrCreateDevSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &opsStack{signer: signer}
	return stack.Config{
		Name: "test issuer", TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev",
		DataDir: dir, RootDir: rootDir, Listen: "127.0.0.1:0", Hosts: []string{"127.0.0.1"}, UpstreamPKI: &up,
		OpenStore: func(ctx context.Context, _ *store.Metrics) (stack.Store, error) {
			return sqlite.Open(ctx, sqlite.Config{Path: dbPath})
		},
		Attestor: func() (attest.Attestor, error) {
			return attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: signer.KeySet()}, Cluster: "dev"})
		},
	}, s
}

// runPKIStack runs the stack of pkiStackConfig until the test ends and
// returns once it serves.
func runPKIStack(t *testing.T, up upstream.Config, dbPath, rootDir string) *opsStack {
	t.Helper()
	cfg, s := pkiStackConfig(t, up, dbPath, rootDir)
	serving := make(chan struct{})
	cfg.Serving = func(addr, bundlePath string) { s.grpcAddr, s.bundlePath = addr, bundlePath; close(serving) }
	s.start(t, cfg, serving)
	return s
}

// issue has the stack sign a workload certificate and returns its chain,
// leaf first and the trust anchor last.
func (s *opsStack) issue(t *testing.T) []*x509.Certificate {
	t.Helper()
	token, err := s.signer.Mint(attest.TokenSpec{Namespace: "web", ServiceAccount: "frontend"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
	resp, err := pb.NewIstioCertificateServiceClient(s.dial(t)).CreateCertificate(ctx,
		&pb.IstioCertificateRequest{Csr: string(testkit.CSRPEM(t)), ValidityDuration: 3600})
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	var chain []*x509.Certificate
	for _, p := range resp.GetCertChain() {
		certs, err := trust.ParseCertificates([]byte(p))
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, certs...)
	}
	if len(chain) < 3 {
		t.Fatalf("chain of %d certificates, want leaf, intermediate, meshca's CA and the upstream's", len(chain))
	}
	return chain
}

// TestStandaloneIssuerUnderStepCA: a standalone issuer whose CA an upstream
// step-ca certifies issues workload certificates whose chain ends at
// step-ca's root and passes `openssl verify` with that root alone. Two
// replicas sharing the store and the root key get certificates of their
// own from step-ca for the one key, and each trusts the other through
// its own bundle.pem (meshca's CA, never step-ca's root); a replica with
// another key is refused.
func TestStandaloneIssuerUnderStepCA(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	up := upstream.Config{Type: upstream.TypeStepCAS, StepCAS: upstream.StepCAS{
		URL: s.URL, Fingerprint: s.Fingerprint, Provisioner: steptest.Provisioner, ProvisionerType: upstream.ProvisionerJWK, KeyFile: s.KeyFile,
	}}
	dbPath, rootDir := filepath.Join(t.TempDir(), "meshca.db"), t.TempDir()
	a := runPKIStack(t, up, dbPath, rootDir)
	b := runPKIStack(t, up, dbPath, rootDir)

	var cas []*x509.Certificate
	for name, r := range map[string]*opsStack{"a": a, "b": b} {
		chain := r.issue(t)
		leaf, anchor := chain[0], chain[len(chain)-1]
		if !anchor.Equal(s.Root) {
			t.Errorf("replica %s: the chain ends at %q, not at step-ca's root", name, anchor.Subject)
		}
		if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{s.Root}, chain[1:len(chain)-1], leaf, time.Time{}); err != nil {
			t.Errorf("replica %s: openssl verify against step-ca's root: %v\n%s", name, err, out)
		}
		cas = append(cas, chain[2])
	}
	if cas[0].Equal(cas[1]) || !bytes.Equal(cas[0].RawSubjectPublicKeyInfo, cas[1].RawSubjectPublicKeyInfo) {
		t.Error("the replicas do not hold certificates of their own for one key")
	}
	// Each replica's bundle.pem is meshca's CA; it authenticates the other.
	a.bundlePath, b.bundlePath = b.bundlePath, a.bundlePath
	a.issue(t)
	b.issue(t)

	cfg, _ := pkiStackConfig(t, up, dbPath, t.TempDir())
	err := stack.Run(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), "holds no root key: refusing to create another") {
		t.Errorf("a replica without the root key: %v, want it refused", err)
	}
}
