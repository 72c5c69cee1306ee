package storm

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/agent"
	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/trust"
)

// stormCluster and stormTrustDomain are the replay issuer's cluster and
// trust domain.
const (
	stormCluster     = "storm"
	stormTrustDomain = "cluster.local"
)

// issuerUnderTest is a running issuer stack on PostgreSQL, as `meshca
// issuer serve` runs it with a local root and `attestor: dev`.
type issuerUnderTest struct {
	addr string
	// roots is its bundle.pem: the new root, the only one it signs under.
	roots  *trust.Bundle
	tokens *attest.DevSigner
}

// startIssuer runs an issuer stack on a fresh PostgreSQL database until
// the end of the benchmark.
func startIssuer(tb testing.TB) *issuerUnderTest {
	tb.Helper()
	dsn := pgtest.NewDatabase(tb)
	dir := tb.TempDir()
	signer, err := attest.LoadOrCreateDevSigner(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	type served struct{ addr, bundle string }
	serving := make(chan served, 1)
	cfg := stack.Config{
		Name: "storm issuer", TrustDomain: spiffeid.RequireTrustDomainFromString(stormTrustDomain), Cluster: stormCluster,
		DataDir: dir, Listen: "127.0.0.1:0", Hosts: []string{"127.0.0.1"},
		OpenStore: func(ctx context.Context, _ *store.Metrics) (stack.Store, error) {
			return postgres.Open(ctx, postgres.Config{DSN: dsn})
		},
		Attestor: func() (attest.Attestor, error) { return devAttestor(signer) },
		Serving:  func(addr, bundle string) { serving <- served{addr, bundle} },
		Logger:   discardLogger(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stack.Run(ctx, cfg) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("issuer stopped with: %v", err)
		}
	})
	var s served
	select {
	case s = <-serving:
	case err := <-done:
		tb.Fatalf("issuer stopped before serving: %v", err)
	case <-time.After(time.Minute):
		tb.Fatal("issuer not serving after a minute")
	}
	pemData, err := os.ReadFile(s.bundle)
	if err != nil {
		tb.Fatal(err)
	}
	roots, err := trust.ParseBundle(pemData)
	if err != nil {
		tb.Fatal(err)
	}
	return &issuerUnderTest{addr: s.addr, roots: roots, tokens: signer}
}

// devAttestor is the attestor `attestor: dev` builds (cmd/meshca
// buildAttestor): JWKS over the dev signer's key, with the attestation
// cache, routed by cluster.
func devAttestor(signer *attest.DevSigner) (attest.Attestor, error) {
	jwks, err := attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: signer.KeySet()}, Cluster: stormCluster})
	if err != nil {
		return nil, err
	}
	return attest.NewMultiCluster(attest.MultiClusterConfig{
		Local: stormCluster, Clusters: map[string]attest.Attestor{stormCluster: attest.NewCached(jwks, attest.CacheConfig{})},
	})
}

// clients returns n agent clients of the issuer (one TLS connection each,
// as agents keep theirs open for the bundle watch).
func (s *issuerUnderTest) clients(tb testing.TB, n int) []*agent.Client {
	tb.Helper()
	out := make([]*agent.Client, n)
	for i := range out {
		c, err := agent.NewClient(agent.ClientConfig{Address: s.addr, Roots: s.roots, ClusterID: stormCluster})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		out[i] = c
	}
	return out
}

// tokens mints one service-account token per workload: each workload
// attests with its own token, so none hits another's cache entry.
func (s *issuerUnderTest) tokensFor(tb testing.TB, workloads []int) map[int]string {
	tb.Helper()
	out := make(map[int]string, len(workloads))
	for _, w := range workloads {
		tok, err := s.tokens.Mint(attest.TokenSpec{Namespace: "storm", ServiceAccount: fmt.Sprintf("workload-%06d", w), TTL: 24 * time.Hour})
		if err != nil {
			tb.Fatal(err)
		}
		out[w] = tok
	}
	return out
}
