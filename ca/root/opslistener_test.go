package root

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// The ops listener of a root stack serves every root metric, counts a real
// enrolment and renewal, and reports the store going away on /readyz.
func TestRunStackOpsListener(t *testing.T) {
	dir := t.TempDir()
	var db *sqlite.Store
	serving, opsAddr := make(chan string, 1), make(chan string, 1)
	cfg := StackConfig{
		Root: Config{Keys: FileKeys{Dir: dir}, Hosts: []string{"127.0.0.1"}, Tick: 50 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)},
		DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
		OpenStore: func(ctx context.Context) (StackStore, error) {
			s, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "meshca.db")})
			db = s
			return s, err
		},
		Serving:        func(addr, _ string) { serving <- addr },
		MetricsServing: func(addr string) { opsAddr <- addr },
		Logger:         slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunStack(ctx, cfg) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("RunStack did not return after cancel")
		}
	}()
	var addr, ops string
	for addr == "" || ops == "" {
		select {
		case addr = <-serving:
		case ops = <-opsAddr:
		case err := <-done:
			t.Fatalf("RunStack returned before serving: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("root not serving after 30s")
		}
	}
	if code, body := testkit.GetText(t, "http://"+ops+"/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz = %d %q", code, body)
	}

	// A real enrolment and renewal, with a token from the admin socket.
	token := addClusterOverSocket(t, cfg.AdminSocketPath(), "east", "east.example")
	conn := dialStack(t, addr, filepath.Join(dir, "bundle.pem"), nil)
	side, err := enroll(t, conn, token)
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	if _, err := renew(t, dialStack(t, addr, filepath.Join(dir, "bundle.pem"), side.tlsCert()), side, true); err != nil {
		t.Fatalf("renew: %v", err)
	}
	// The intermediate's expiry and the cluster's reuse counter appear at
	// the next re-evaluation.
	testkit.Eventually(t, 10*time.Second, "the intermediate's expiry and the cluster's reuse counter", func() error {
		_, body := testkit.GetText(t, "http://"+ops+"/metrics")
		for _, want := range []string{`meshca_ca_expiry_timestamp_seconds{cluster="east",kind="intermediate",`,
			`meshca_root_credential_reuse_total{cluster="east"} 0`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
	_, body := testkit.GetText(t, "http://"+ops+"/metrics")
	for _, want := range []string{
		`meshca_root_enrolments_total{result="ok"} 1`, `meshca_root_enrolments_total{result="refused"} 0`,
		`meshca_root_enrolments_total{result="error"} 0`,
		`meshca_root_renewals_total{result="ok"} 1`, `meshca_root_renewals_total{result="refused"} 0`,
		`meshca_root_signer_duration_seconds_count{backend="file"} `, `meshca_root_signer_duration_seconds_count{backend="vault"} 0`,
		"meshca_root_bundle_sequence ", "meshca_root_leader 1", `meshca_crl_next_update_timestamp_seconds{issuer="root"} `,
		`meshca_ca_expiry_timestamp_seconds{cluster="",kind="root",`, `meshca_ready{component="root"} 1`,
		"go_goroutines ", "process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The store goes away: not ready, saying why.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	code, body := testkit.GetText(t, "http://"+ops+"/readyz")
	if code != http.StatusServiceUnavailable || body != "not ready: store: unreachable\n" {
		t.Fatalf("/readyz with the store closed = %d %q", code, body)
	}
	if _, body := testkit.GetText(t, "http://"+ops+"/metrics"); !strings.Contains(body, `meshca_ready{component="root"} 0`) {
		t.Error(`/metrics with the store closed lacks meshca_ready{component="root"} 0`)
	}
	if code, _ := testkit.GetText(t, "http://"+ops+"/healthz"); code != 200 {
		t.Errorf("/healthz with the store closed = %d, want 200 (alive)", code)
	}
}

func addClusterOverSocket(t testing.TB, path, name, td string) string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := meshcav1.NewAdminServiceClient(conn).AddCluster(context.Background(), &meshcav1.AddClusterRequest{Name: name, TrustDomain: td})
	if err != nil {
		t.Fatalf("add cluster %s: %v", name, err)
	}
	return resp.GetJoinToken()
}

// dialStack connects to a root stack's gRPC address over TLS, trusting the
// roots of its bundle.pem, presenting cert when not nil.
func dialStack(t testing.TB, addr, bundleFile string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	data, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := trust.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: roots.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
