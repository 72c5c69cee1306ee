package stack_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/sqlite"
)

// opsStack is a running stack with an operations listener.
type opsStack struct {
	grpcAddr, opsAddr, bundlePath string
	signer                        *attest.DevSigner
	cancel                        context.CancelFunc
	done                          chan error
}

// runOpsStack runs a local-root stack attesting dev tokens, with its
// operations listener, over the store open returns; it returns once both
// listeners serve. The stack stops when the test ends, or on cancel.
func runOpsStack(t *testing.T, open func(ctx context.Context, m *store.Metrics) (stack.Store, error)) *opsStack {
	t.Helper()
	dir := t.TempDir()
	signer, err := attest.LoadOrCreateDevSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &opsStack{signer: signer}
	serving, opsServing := make(chan struct{}), make(chan struct{})
	cfg := stack.Config{
		Name: "test issuer", TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev",
		DataDir: dir, Listen: "127.0.0.1:0", Hosts: []string{"127.0.0.1"}, MetricsListen: "127.0.0.1:0",
		OpenStore: func(ctx context.Context, m *store.Metrics) (stack.Store, error) {
			if m == nil {
				return nil, fmt.Errorf("no store metrics with a metrics listener")
			}
			return open(ctx, m)
		},
		Attestor: func() (attest.Attestor, error) {
			return attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: signer.KeySet()}, Cluster: "dev"})
		},
		Serving:        func(addr, bundlePath string) { s.grpcAddr, s.bundlePath = addr, bundlePath; close(serving) },
		MetricsServing: func(addr string) { s.opsAddr = addr; close(opsServing) },
	}
	s.start(t, cfg, serving, opsServing)
	return s
}

// start runs cfg until the test ends (or cancel) and returns once every
// one of ready is closed.
func (s *opsStack) start(t *testing.T, cfg stack.Config, ready ...chan struct{}) {
	t.Helper()
	s.cancel, s.done = startStack(t, cfg, 60*time.Second, ready...)
}

// dial connects to the stack's gRPC port, trusting its bundle.pem.
func (s *opsStack) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	data, err := os.ReadFile(s.bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		t.Fatal("bundle.pem holds no certificate")
	}
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// get returns the status and body of GET path on the operations listener.
func (s *opsStack) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return testkit.GetText(t, "http://"+s.opsAddr+path)
}

// request calls CreateCertificate with token and returns its code.
func request(t *testing.T, client pb.IstioCertificateServiceClient, token string) codes.Code {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
	_, err := client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(testkit.CSRPEM(t)), ValidityDuration: 3600})
	return status.Code(err)
}

// sample returns the value of the series line (name and labels exactly as
// exposed), failing when it is absent.
func sample(t *testing.T, metrics, series string) string {
	t.Helper()
	for line := range strings.Lines(metrics) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("series %s not exposed", series)
	return ""
}

// A scrape of a running issuer shows the metric names dashboards and
// alerts rely on, and the counters move with what the issuer does.
func TestMetricsOfARunningIssuer(t *testing.T) {
	for _, tt := range []struct {
		name string
		open func(t *testing.T) func(ctx context.Context, m *store.Metrics) (stack.Store, error)
	}{
		{"sqlite", func(t *testing.T) func(ctx context.Context, m *store.Metrics) (stack.Store, error) {
			path := filepath.Join(t.TempDir(), "meshca.db")
			return func(ctx context.Context, m *store.Metrics) (stack.Store, error) {
				return sqlite.Open(ctx, sqlite.Config{Path: path, GroupCommit: store.GroupCommitConfig{Metrics: m}})
			}
		}},
		{"postgres", func(t *testing.T) func(ctx context.Context, m *store.Metrics) (stack.Store, error) {
			dsn := pgtest.NewDatabase(t)
			return func(ctx context.Context, m *store.Metrics) (stack.Store, error) {
				return postgres.Open(ctx, postgres.Config{DSN: dsn, MaxConns: 4, GroupCommit: store.GroupCommitConfig{Metrics: m}})
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) { testMetricsOfARunningIssuer(t, tt.open(t)) })
	}
}

func testMetricsOfARunningIssuer(t *testing.T, open func(ctx context.Context, m *store.Metrics) (stack.Store, error)) {
	s := runOpsStack(t, open)
	_, before := s.get(t, "/metrics")
	for _, series := range []string{
		`meshca_issuer_requests_total{cluster="dev",code="OK"}`,
		`meshca_issuer_requests_total{cluster="dev",code="Unauthenticated"}`,
		`meshca_issuer_attestation_failures_total{cluster="dev",reason="invalid_token"}`,
		`meshca_issuer_attestation_failures_total{cluster="dev",reason="expired"}`,
		`meshca_issuer_attestation_failures_total{cluster="dev",reason="other"}`,
		`meshca_issuer_denied_total{reason="revoked"}`,
		`meshca_issuer_denied_total{reason="policy"}`,
		`meshca_store_errors_total{op="commit"}`,
		`meshca_store_errors_total{op="ping"}`,
	} {
		if v := sample(t, before, series); v != "0" {
			t.Errorf("%s = %s before any request, want 0", series, v)
		}
	}
	client := pb.NewIstioCertificateServiceClient(s.dial(t))
	good, err := s.signer.Mint(attest.TokenSpec{Namespace: "web", ServiceAccount: "frontend"})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := s.signer.Mint(attest.TokenSpec{Namespace: "web", ServiceAccount: "frontend", TTL: time.Minute, Now: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if c := request(t, client, good); c != codes.OK {
		t.Fatalf("issuance with a good token: %v", c)
	}
	if c := request(t, client, "not-a-token"); c != codes.Unauthenticated {
		t.Fatalf("issuance with a bad token: %v", c)
	}
	if c := request(t, client, expired); c != codes.Unauthenticated {
		t.Fatalf("issuance with an expired token: %v", c)
	}

	// /readyz probes the store, which reads the audit head for the gauge.
	if code, body := s.get(t, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	code, after := s.get(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for series, want := range map[string]string{
		`meshca_issuer_requests_total{cluster="dev",code="OK"}`:                            "1",
		`meshca_issuer_requests_total{cluster="dev",code="Unauthenticated"}`:               "2",
		`meshca_issuer_attestation_failures_total{cluster="dev",reason="invalid_token"}`:   "1",
		`meshca_issuer_attestation_failures_total{cluster="dev",reason="expired"}`:         "1",
		`meshca_issuer_request_duration_seconds_count`:                                     "3",
		`meshca_store_commit_batch_size_sum`:                                               "1",
		`meshca_ready{component="issuer"}`:                                                 "1",
		`meshca_store_errors_total{op="commit"}`:                                           "0",
		`meshca_issuer_attestation_failures_total{cluster="dev",reason="unknown_cluster"}`: "0",
	} {
		if got := sample(t, after, series); got != want {
			t.Errorf("%s = %s, want %s", series, got, want)
		}
	}
	if n := sample(t, after, "meshca_store_commit_duration_seconds_count"); n != "1" {
		t.Errorf("meshca_store_commit_duration_seconds_count = %s after one issuance, want 1", n)
	}
	if v := sample(t, after, "meshca_audit_head_seq"); v == "0" {
		t.Error("meshca_audit_head_seq is 0 after an issuance was audited")
	}
	for _, re := range []string{
		`(?m)^meshca_ca_expiry_timestamp_seconds\{cluster="dev",kind="intermediate",sha256="[0-9a-f]{64}"\} [0-9.e+]+$`,
		`(?m)^meshca_ca_expiry_timestamp_seconds\{cluster="",kind="root",sha256="[0-9a-f]{64}"\} [0-9.e+]+$`,
		`(?m)^meshca_crl_next_update_timestamp_seconds\{issuer="dev"\} [1-9][0-9.e+]+$`,
		`(?m)^go_goroutines [0-9]+$`,
		`(?m)^process_start_time_seconds `,
	} {
		if !regexp.MustCompile(re).MatchString(after) {
			t.Errorf("/metrics has no line matching %s", re)
		}
	}
}

// On SIGTERM (ctx cancelled) the gRPC health service turns NOT_SERVING
// while the server drains: a health watcher opened before learns it on
// its open stream.
func TestHealthNotServingWhileDraining(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s := runOpsStack(t, func(ctx context.Context, _ *store.Metrics) (stack.Store, error) {
		return sqlite.Open(ctx, sqlite.Config{Path: path})
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(s.dial(t)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := watch.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		return r.Status
	}
	if st := next(); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health of a ready issuer: %v", st)
	}
	s.cancel()
	if st := next(); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health while draining: %v", st)
	}
	cancel() // ends the watch: the graceful stop waits for it
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("stack did not stop after the watch ended")
	}
}
