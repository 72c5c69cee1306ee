package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/test/kubetest"
)

// audience is what the workloads' tokens are minted for, as istio-agent's.
const audience = "istio-ca"

// shared is one cluster ("east") for every test that does not stop its API
// server. Each test works in namespaces of its own.
var shared struct {
	once sync.Once
	c    *kubetest.Cluster
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil && code != 0 {
		fmt.Fprintf(os.Stderr, "kube-apiserver (shared cluster) log tail:\n%s\n", shared.c.APIServerLogTail())
	}
	if shared.c != nil {
		if err := shared.c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "kube: stop shared cluster:", err)
			code = 1
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// east returns the shared cluster, starting it on first use.
func east(tb testing.TB) *kubetest.Cluster {
	tb.Helper()
	apiserver, etcd := kubetest.Binaries(tb)
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "meshca-kube-"); shared.err != nil {
			return
		}
		shared.c, shared.err = kubetest.New(context.Background(), apiserver, etcd, kubetest.Options{Name: "east", Dir: shared.dir})
	})
	if shared.err != nil {
		tb.Fatalf("shared cluster: %v", shared.err)
	}
	return shared.c
}

// newTokenReview is the production TokenReview attestor for cluster c
// (named name), talking to it as cluster-admin unless cfg.Client is set.
func newTokenReview(tb testing.TB, c *kubetest.Cluster, name string, cfg attest.TokenReviewConfig) *attest.TokenReview {
	tb.Helper()
	if cfg.Client == nil {
		cfg.Client = c.Admin
	}
	cfg.Cluster = name
	if cfg.Audiences == nil {
		cfg.Audiences = []string{audience}
	}
	a, err := attest.NewTokenReview(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// workload is a namespace with a service account and a pod running as it.
type workload struct {
	ns, sa string
	pod    *corev1.Pod
}

func newWorkload(tb testing.TB, c *kubetest.Cluster) workload {
	tb.Helper()
	w := workload{ns: c.Namespace(tb), sa: "web"}
	c.ServiceAccount(tb, w.ns, w.sa)
	w.pod = c.Pod(tb, w.ns, "web-0", w.sa)
	return w
}

func (w workload) spiffeID() string { return "spiffe://cluster.local/ns/" + w.ns + "/sa/" + w.sa }

// wire is a real issuer (TLS gRPC on loopback, SQLite store) in front of an
// attestor, and a client for it.
type wire struct {
	db     *sqlite.Store
	client pb.IstioCertificateServiceClient
	iss    *issuer.Issuer
	// logs returns what the issuer logged so far.
	logs func() string
}

func newWire(tb testing.TB, att attest.Attestor) *wire {
	tb.Helper()
	tree := testkit.New(tb, testkit.Options{})
	var logs testkit.LogBuffer
	w := &wire{logs: logs.String}
	var err error
	if w.db, err = sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(tb.TempDir(), "meshca.db")}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.db.Close() })
	w.iss, err = issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "east", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: att, Recorder: w.db, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: w.iss, Hosts: []string{"127.0.0.1", "istiod.istio-system.svc"}})
	if err != nil {
		tb.Fatal(err)
	}
	addr := testkit.Serve(tb, "Serve", srv.Serve)
	creds := credentials.NewTLS(&tls.Config{RootCAs: tree.Bundle.Pool(), ServerName: "istiod.istio-system.svc"})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	w.client = pb.NewIstioCertificateServiceClient(conn)
	return w
}

// issue asks for a certificate as istio-agent does and returns the leaf.
func (w *wire) issue(tb testing.TB, token, clusterID string) (*x509.Certificate, error) {
	tb.Helper()
	md := metadata.Pairs("authorization", "Bearer "+token)
	if clusterID != "" {
		md.Set("clusterid", clusterID)
	}
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 30*time.Second)
	defer cancel()
	resp, err := w.client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(testCSR(tb)), ValidityDuration: 600})
	if err != nil {
		if resp != nil {
			tb.Errorf("error %v came with a response", err)
		}
		return nil, err
	}
	chain := resp.GetCertChain()
	if len(chain) < 2 {
		tb.Fatalf("cert_chain has %d entries", len(chain))
	}
	block, _ := pem.Decode([]byte(chain[0]))
	if block == nil {
		tb.Fatal("leaf is not PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return leaf, nil
}

// mustIssue requires a certificate for exactly wantID.
func (w *wire) mustIssue(tb testing.TB, token, clusterID, wantID string) *x509.Certificate {
	tb.Helper()
	leaf, err := w.issue(tb, token, clusterID)
	if err != nil {
		tb.Fatalf("issue: %v\nissuer log:\n%s", err, w.logs())
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		tb.Fatalf("leaf URI SANs %v, want exactly %s", leaf.URIs, wantID)
	}
	return leaf
}

// mustFail requires the request to fail with code, to leave no certificate
// row, and (for Unauthenticated) to tell the caller nothing more.
func (w *wire) mustFail(tb testing.TB, token, clusterID string, code codes.Code) {
	tb.Helper()
	before := w.rows(tb)
	_, err := w.issue(tb, token, clusterID)
	w.checkFailure(tb, err, code)
	if after := w.rows(tb); after != before {
		tb.Errorf("failed request changed certificate rows %d -> %d", before, after)
	}
}

func (w *wire) checkFailure(tb testing.TB, err error, code codes.Code) {
	tb.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code {
		tb.Fatalf("got code %v (%q), want %v\nissuer log:\n%s", st.Code(), st.Message(), code, w.logs())
	}
	if code == codes.Unauthenticated && st.Message() != "authentication failed" {
		tb.Errorf("Unauthenticated message %q is not opaque", st.Message())
	}
}

// pollFail repeats a request until it fails with code, for at most bound.
// The API server caches successful reviews for a few seconds, so a revoked
// token stops working shortly after, not at once. It returns how long it
// took and requires that no poll left a certificate row behind other than
// those of the requests that still succeeded.
func (w *wire) pollFail(tb testing.TB, token string, code codes.Code, bound time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	for {
		_, err := w.issue(tb, token, "")
		if err != nil {
			w.checkFailure(tb, err, code)
			return time.Since(start)
		}
		if time.Since(start) > bound {
			tb.Fatalf("token still accepted %s after revocation", bound)
		}
		time.Sleep(200 * time.Millisecond) // poll interval, not a correctness wait
	}
}

func (w *wire) rows(tb testing.TB) int {
	tb.Helper()
	certs, err := w.db.Certificates(context.Background(), store.CertificateFilter{})
	if err != nil {
		tb.Fatal(err)
	}
	return len(certs)
}

// certRows returns every recorded certificate.
func (w *wire) certRows(tb testing.TB) []store.Certificate {
	tb.Helper()
	certs, err := w.db.Certificates(context.Background(), store.CertificateFilter{})
	if err != nil {
		tb.Fatal(err)
	}
	return certs
}

// requireTokensNotLogged fails if any token (or its signature) reached the
// issuer's log.
func (w *wire) requireTokensNotLogged(tb testing.TB, tokens ...string) {
	tb.Helper()
	logs := w.logs()
	for _, tok := range tokens {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if len(sig) < 16 {
			sig = tok
		}
		if strings.Contains(logs, sig) {
			tb.Errorf("a token appears in the issuer log")
		}
	}
}

// testCSR is one ECDSA P-256 CSR with no SANs, made once.
var testCSR = func() func(testing.TB) []byte {
	var once sync.Once
	var csr []byte
	return func(tb testing.TB) []byte {
		once.Do(func() {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				panic(err)
			}
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				panic(err)
			}
			csr = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		})
		return csr
	}
}()
