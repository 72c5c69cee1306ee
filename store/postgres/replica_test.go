package postgres_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/trust"
)

// fleet is what issuer replicas of one cluster share: the CA tree and the
// dev token signer their attestor trusts, plus ready-made tokens and CSRs.
type fleet struct {
	tree   *testkit.Tree
	signer *attest.DevSigner
	tokens []string
	csrs   [][]byte
}

func newFleet(tb testing.TB) *fleet {
	tb.Helper()
	f := &fleet{tree: testkit.New(tb, testkit.Options{})}
	var err error
	if f.signer, err = attest.LoadOrCreateDevSigner(tb.TempDir()); err != nil {
		tb.Fatal(err)
	}
	for i := range 16 {
		tok, err := f.signer.Mint(attest.TokenSpec{Namespace: "load", ServiceAccount: fmt.Sprintf("sa-%d", i)})
		if err != nil {
			tb.Fatal(err)
		}
		f.tokens = append(f.tokens, tok)
	}
	f.csrs = testCSRs(tb)
	return f
}

// testCSRs returns 16 ECDSA P-256 CSRs.
func testCSRs(tb testing.TB) [][]byte {
	tb.Helper()
	csrs := make([][]byte, 16)
	for i := range csrs {
		csrs[i] = testkit.CSRPEM(tb)
	}
	return csrs
}

// replica is one issuer instance: the real issuer (cached JWKS attestation)
// behind real TLS gRPC on loopback, recording into its own store.
type replica struct {
	f      *fleet
	client pb.IstioCertificateServiceClient
}

// startReplica serves an issuer for cluster that records into rec, until tb
// ends.
func (f *fleet) startReplica(tb testing.TB, cluster string, rec issuer.Recorder) *replica {
	tb.Helper()
	jwks, err := attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: f.signer.KeySet()}, Cluster: cluster})
	if err != nil {
		tb.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: f.tree.TrustDomain, Cluster: cluster, Authority: f.tree.Intermediate, Bundle: f.tree.Bundle,
		Attestor: attest.NewCached(jwks, attest.CacheConfig{}), Recorder: rec, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: iss, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		tb.Fatal(err)
	}
	addr := testkit.Serve(tb, "Serve", srv.Serve)
	creds := credentials.NewTLS(&tls.Config{RootCAs: f.tree.Bundle.Pool(), ServerName: "localhost"})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &replica{f: f, client: pb.NewIstioCertificateServiceClient(conn)}
}

// requestTimeout bounds one issuance request.
const requestTimeout = 20 * time.Second

// issue requests a certificate with token and CSR number i and returns the
// serial of the leaf received.
func (r *replica) issue(i int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.f.tokens[i%len(r.f.tokens)])
	resp, err := r.client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(r.f.csrs[i%len(r.f.csrs)])})
	if err != nil {
		return "", err
	}
	if len(resp.GetCertChain()) == 0 {
		return "", errors.New("empty certificate chain")
	}
	block, _ := pem.Decode([]byte(resp.GetCertChain()[0]))
	if block == nil {
		return "", errors.New("leaf is not PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	return trust.SerialHex(leaf.SerialNumber), nil
}

// trackingRecorder passes writes to a store and remembers the serials whose
// commit outcome the store reported as unknown: only those may be recorded
// without having been released.
type trackingRecorder struct {
	rec     issuer.Recorder
	mu      sync.Mutex
	unknown map[string]bool
}

func (t *trackingRecorder) RecordIssuance(ctx context.Context, cert store.Certificate, ev store.AuditEvent) error {
	err := t.rec.RecordIssuance(ctx, cert, ev)
	if errors.Is(err, postgres.ErrCommitOutcomeUnknown) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.unknown == nil {
			t.unknown = map[string]bool{}
		}
		t.unknown[cert.Serial] = true
	}
	return err
}

func (t *trackingRecorder) unknownSerials() map[string]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]bool, len(t.unknown))
	for s := range t.unknown {
		out[s] = true
	}
	return out
}
