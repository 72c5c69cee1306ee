package bench

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// benchCluster and benchTrustDomain are the issuer's cluster and trust
// domain.
const (
	benchCluster     = "bench"
	benchTrustDomain = "cluster.local"
)

// issuerStack is a cluster issuer with a local root, wired as `meshca
// issuer serve` wires it (cmd/meshca/serve.go): SQLite store, deny-list,
// issuer, CRL signer, the Istio CA API and BundleService over TLS on
// loopback with the issuer's CRLs, and the admin API on a Unix socket. Its
// attestor is the dev attestor (cmd/meshca/issuer.go clusterAttestor).
type issuerStack struct {
	td spiffeid.TrustDomain
	// addr is the Istio CA API's host:port.
	addr string
	// rootPEM is what the issuer writes to DATA_DIR/bundle.pem.
	rootPEM []byte
	roots   *trust.Bundle
	// intermediate signs the leaves and the CRLs.
	intermediate *x509.Certificate
	db           *sqlite.Store
	iss          *issuer.Issuer
	// tokens mints the service-account tokens the dev attestor trusts.
	tokens *attest.DevSigner
	// admin is a client of the admin socket, as `meshca admin` dials it.
	admin meshcav1.AdminServiceClient
}

// discardLogger keeps the logs of a hundred agents out of the results.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startIssuer starts an issuerStack that serves until the end of the test.
func startIssuer(tb testing.TB) *issuerStack {
	tb.Helper()
	dir := tb.TempDir()
	log := discardLogger()
	s := &issuerStack{td: spiffeid.RequireTrustDomainFromString(benchTrustDomain)}

	root, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(tb, "bench-root")})
	if err != nil {
		tb.Fatalf("root: %v", err)
	}
	authority := newIntermediate(tb, root, s.td)
	s.intermediate = authority.Certificate
	if s.roots, err = trust.NewBundle(root.Certificate); err != nil {
		tb.Fatalf("bundle: %v", err)
	}
	s.rootPEM = s.roots.PEM()

	att := devAttestor(tb, s, dir)
	if s.db, err = sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "meshca.db")}); err != nil {
		tb.Fatalf("store: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.db.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	deny, err := issuer.NewDenyList(issuer.DenyListConfig{Store: s.db, Cluster: benchCluster, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	if err := deny.Refresh(context.Background()); err != nil {
		tb.Fatalf("load the deny-list: %v", err)
	}
	s.iss, err = issuer.New(issuer.Config{
		TrustDomain: s.td, Cluster: benchCluster, Authority: authority, Bundle: s.roots, Attestor: att, Recorder: s.db,
		DenyList: deny, Logger: log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	crls, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{Issuer: s.iss, DenyList: deny, Store: s.db, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	adminSrv, err := issuer.NewAdminServer(issuer.AdminConfig{
		TrustDomain: s.td, Cluster: benchCluster, Store: s.db, DenyList: deny, Logger: log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: s.iss, Hosts: []string{"127.0.0.1"}, CRLs: crls})
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.addr = lis.Addr().String()
	adminSock := filepath.Join(dir, "admin.sock")
	adminLis, err := adminapi.ListenUnix(adminSock)
	if err != nil {
		lis.Close()
		tb.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, lis) })
	g.Go(func() error { return deny.Run(gctx) })
	g.Go(func() error { return crls.Run(gctx) })
	g.Go(func() error { return adminSrv.ServeUnix(gctx, adminLis) })
	tb.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			tb.Errorf("issuer stopped with: %v", err)
		}
	})
	s.admin = adminClient(tb, adminSock)
	return s
}

// newIntermediate mints the issuer's intermediate under root, as `meshca
// issuer serve` does with a local root (cmd/meshca/dev.go newIntermediate).
func newIntermediate(tb testing.TB, root *ca.Authority, td spiffeid.TrustDomain) *ca.Authority {
	tb.Helper()
	key := testkit.Key(tb, "bench-intermediate")
	cert, err := root.SignIntermediate(ca.IntermediateRequest{PublicKey: key.Public(), TrustDomain: td, Cluster: benchCluster, ServingNames: []string{"127.0.0.1"}})
	if err != nil {
		tb.Fatalf("intermediate: %v", err)
	}
	a, err := ca.NewAuthority(cert, key)
	if err != nil {
		tb.Fatalf("intermediate authority: %v", err)
	}
	return a
}

// devAttestor builds the attestor of a cluster with `attestor: dev`, with
// the cache and cluster routing `meshca issuer serve` puts around it
// (cmd/meshca/issuer.go buildAttestor), and keeps the dev signer in s.
func devAttestor(tb testing.TB, s *issuerStack, dir string) attest.Attestor {
	tb.Helper()
	signer, err := attest.LoadOrCreateDevSigner(dir)
	if err != nil {
		tb.Fatal(err)
	}
	s.tokens = signer
	jwks, err := attest.NewJWKS(attest.JWKSConfig{
		Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: signer.KeySet()}, Cluster: benchCluster,
	})
	if err != nil {
		tb.Fatal(err)
	}
	mc, err := attest.NewMultiCluster(attest.MultiClusterConfig{
		Local: benchCluster, Clusters: map[string]attest.Attestor{benchCluster: attest.NewCached(jwks, attest.CacheConfig{})},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return mc
}

// adminClient dials the admin socket as `meshca admin` does.
func adminClient(tb testing.TB, socket string) meshcav1.AdminServiceClient {
	tb.Helper()
	conn, err := grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("admin socket: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return meshcav1.NewAdminServiceClient(conn)
}

// token mints a dev service-account token for bench/<serviceAccount>.
func (s *issuerStack) token(tb testing.TB, serviceAccount string) string {
	tb.Helper()
	tok, err := s.tokens.Mint(attest.TokenSpec{Namespace: "bench", ServiceAccount: serviceAccount, TTL: 24 * time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// workloadID is the SPIFFE ID the issuer gives bench/<serviceAccount>.
func (s *issuerStack) workloadID(serviceAccount string) string {
	return spiffeid.RequireFromSegments(s.td, "ns", "bench", "sa", serviceAccount).String()
}

// agentSerial returns the serial (hex) of the newest unexpired certificate
// of id, read from the cluster's store.
func (s *issuerStack) agentSerial(ctx context.Context, id string) (string, error) {
	certs, err := s.db.Certificates(ctx, store.CertificateFilter{SPIFFEID: id, Cluster: benchCluster, ActiveAt: time.Now()})
	if err != nil {
		return "", fmt.Errorf("certificates of %s: %w", id, err)
	}
	if len(certs) == 0 {
		return "", fmt.Errorf("no unexpired certificate of %s in the store", id)
	}
	newest := certs[0]
	for _, c := range certs[1:] {
		if c.NotBefore.After(newest.NotBefore) {
			newest = c
		}
	}
	return newest.Serial, nil
}

// issueSerial issues a new certificate for bench/<serviceAccount> with a
// fresh CSR, through the issuer's own hot path (attest, sign, verify,
// record), and returns its serial (hex).
func (s *issuerStack) issueSerial(ctx context.Context, tb testing.TB, token string) string {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, testkit.Key(tb, "bench-workload"))
	if err != nil {
		tb.Fatal(err)
	}
	chain, err := s.iss.Issue(ctx, issuer.Request{Token: token, CSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})})
	if err != nil {
		tb.Fatalf("issue: %v", err)
	}
	return trust.SerialHex(chain[0].SerialNumber)
}

// writeFile writes data to dir/name and returns the path.
func writeFile(tb testing.TB, dir, name string, data []byte, perm os.FileMode) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, perm); err != nil {
		tb.Fatal(err)
	}
	return path
}
