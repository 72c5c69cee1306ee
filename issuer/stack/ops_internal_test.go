package stack

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

// refuse attests nobody: these tests issue nothing.
type refuse struct{}

func (refuse) Attest(context.Context, attest.Request) (attest.Identity, error) {
	return attest.Identity{}, attest.ErrUnauthenticated
}

// readyz answers GET /readyz of checks.
func readyz(t *testing.T, checks ops.Checks) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	ops.Handler(nil, checks).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// /readyz names what is wrong: the CA once every root expired, the
// intermediate once it expired before its root, the store once closed.
func TestReadinessReasons(t *testing.T) {
	start := time.Now()
	tree := testkit.New(t, testkit.Options{Now: start, RootTTL: 48 * time.Hour, IntermediateTTL: 24 * time.Hour, Cluster: "dev"})
	db, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: refuse{}, Recorder: db,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := store.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := &parts{iss: iss}
	at := func(now time.Time) ops.Checks { return p.readiness(db, m, nil, func() time.Time { return now }) }
	for _, tt := range []struct {
		name string
		now  time.Time
		code int
		body string
	}{
		{"fresh", start.Add(time.Hour), 200, "ready\n"},
		{"intermediate expired", start.Add(30 * time.Hour), 503, "not ready: intermediate: no valid intermediate\n"},
		{"root expired", start.Add(50 * time.Hour), 503, "not ready: ca: expired\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if code, body := readyz(t, at(tt.now)); code != tt.code || body != tt.body {
				t.Fatalf("/readyz = %d %q, want %d %q", code, body, tt.code, tt.body)
			}
		})
	}
	up, err := issuer.NewUpstream(issuer.UpstreamConfig{
		Address: "127.0.0.1:1", Roots: tree.Bundle, TrustDomain: tree.TrustDomain, Cluster: "dev", CredentialDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	code, body := readyz(t, p.readiness(db, m, up, time.Now))
	if want := "not ready: upstream: not enrolled\n"; code != 503 || body != want {
		t.Fatalf("/readyz before enrolment = %d %q, want 503 %q", code, body, want)
	}
	db.Close()
	code, body = readyz(t, at(start.Add(time.Hour)))
	// The store's error stays in the logs: an unauthenticated prober reads
	// only which check failed.
	if want := "not ready: store: unreachable\n"; code != 503 || body != want {
		t.Fatalf("/readyz with the store closed = %d %q, want 503 %q", code, body, want)
	}
}

// A deny-list reload that fails counts as a store error: the store alert
// sees a store that stops answering the revocation query.
func TestDenyListLoadFailuresAreStoreErrors(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := store.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	l := countedLister{db, m}
	if _, err := l.Revocations(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	failures := func() float64 { return storeErrors(t, reg, store.OpRevocations) }
	if got := failures(); got != 0 {
		t.Fatalf("after a good load: %v failures", got)
	}
	db.Close()
	if _, err := l.Revocations(ctx, time.Now()); err == nil {
		t.Fatal("a closed store listed revocations")
	}
	if got := failures(); got != 1 {
		t.Fatalf("after a failed load: %v failures, want 1", got)
	}
}

// storeErrors returns the value of meshca_store_errors_total{op} in reg.
func storeErrors(t *testing.T, reg *prometheus.Registry, op string) float64 {
	t.Helper()
	m := testkit.Series(t, reg, store.ErrorsMetric, "op", op)
	if m == nil {
		t.Fatalf("%s{op=%q} not exported", store.ErrorsMetric, op)
	}
	return testkit.Value(m)
}
