package ops_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshca/meshca/internal/ops"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestHandlerReportsTheFirstFailingCheck(t *testing.T) {
	var storeDown atomic.Bool
	checks := ops.Checks{
		{Name: "store", Ready: func(context.Context) error {
			if storeDown.Load() {
				return errors.New("unreachable")
			}
			return nil
		}},
		{Name: "intermediate", Ready: func(context.Context) error { return nil }},
	}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "meshca_test_total", Help: "test"})
	reg.MustRegister(c)
	h := ops.Handler(reg, checks)

	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	storeDown.Store(true)
	if code, body := get(t, h, "/readyz"); code != 503 || body != "not ready: store: unreachable\n" {
		t.Fatalf("/readyz with the store down = %d %q", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("/healthz follows readiness: %d", code)
	}
	if code, body := get(t, h, "/metrics"); code != 200 || !strings.Contains(body, "meshca_test_total 0") {
		t.Fatalf("/metrics = %d %q", code, body)
	}
	if code, _ := get(t, ops.Handler(nil, nil), "/metrics"); code != 404 {
		t.Fatalf("/metrics without a gatherer = %d, want 404", code)
	}
}

func TestValidate(t *testing.T) {
	if err := (ops.Config{}).Validate(); err == nil {
		t.Fatal("no address: want an error")
	}
	if err := (ops.Config{Listen: ":0", Checks: ops.Checks{{Name: "x"}}}).Validate(); err == nil {
		t.Fatal("check without a function: want an error")
	}
	if err := (ops.Config{Listen: ":0"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestFollowTracksReadinessAndDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		checks := ops.Checks{{Name: "store", Ready: func(context.Context) error {
			if down.Load() {
				return errors.New("unreachable")
			}
			return nil
		}}}
		hs := health.NewServer()
		status := func() healthpb.HealthCheckResponse_ServingStatus {
			r, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			return r.Status
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { ops.Follow(ctx, hs, checks, time.Second, nil); close(done) }()
		synctest.Wait()
		if got := status(); got != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("ready: %v", got)
		}
		down.Store(true)
		time.Sleep(time.Second)
		synctest.Wait()
		if got := status(); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("store down: %v", got)
		}
		down.Store(false)
		time.Sleep(time.Second)
		synctest.Wait()
		if got := status(); got != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("store back: %v", got)
		}
		cancel()
		<-done
		if got := status(); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("draining: %v", got)
		}
	})
}

func TestRegisterSharesACollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "meshca_shared_total", Help: "shared"}
	a, err := ops.Register(reg, prometheus.NewCounterVec(opts, []string{"result"}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ops.Register(reg, prometheus.NewCounterVec(opts, []string{"result"}))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("second registration did not return the first collector")
	}
	if _, err := ops.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshca_shared_total", Help: "other"}, []string{"x"})); err == nil {
		t.Fatal("a different collector under the same name: want an error")
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- ops.Run(ctx, ops.Config{Listen: "127.0.0.1:0"}, func(a string) { addrc <- a }) }()
	addr := <-addrc
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestReadyGaugeFollowsChecks(t *testing.T) {
	var down atomic.Bool
	checks := ops.Checks{{Name: "store", Ready: func(context.Context) error {
		if down.Load() {
			return errors.New("unreachable")
		}
		return nil
	}}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(ops.ReadyGauge("issuer", checks))
	h := ops.Handler(reg, checks)
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, `meshca_ready{component="issuer"} 1`) {
		t.Fatalf("ready: %s", body)
	}
	down.Store(true)
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, `meshca_ready{component="issuer"} 0`) {
		t.Fatalf("not ready: %s", body)
	}
}

func TestReadyzHidesWhatHideKeepsForTheLogs(t *testing.T) {
	secret := errors.New(`failed to connect to user=meshca host=10.0.0.5 database=ca`)
	checks := ops.Checks{{Name: "store", Ready: func(context.Context) error { return ops.Hide("unreachable", secret) }}}
	code, body := get(t, ops.Handler(nil, checks), "/readyz")
	if code != 503 || body != "not ready: store: unreachable\n" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	err := checks.Ready(context.Background())
	if !errors.Is(err, secret) || !strings.Contains(err.Error(), "host=10.0.0.5") {
		t.Fatalf("Ready() = %v: the logs need the cause", err)
	}
	if got := ops.Public(err); got != "store: unreachable" {
		t.Fatalf("Public = %q", got)
	}
}

func TestCAExpiryReplacesOnlyItsOwnSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	root, err := ops.NewCAExpiry(reg)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ops.NewCAExpiry(reg)
	if err != nil {
		t.Fatal(err)
	}
	r := ops.CAKey{Kind: "root", SHA256: "aa"}
	i1 := ops.CAKey{Kind: "intermediate", Cluster: "east", SHA256: "bb"}
	i2 := ops.CAKey{Kind: "intermediate", Cluster: "east", SHA256: "cc"}
	root.Set(map[ops.CAKey]float64{r: 100})
	iss.Set(map[ops.CAKey]float64{i1: 10})
	iss.Set(map[ops.CAKey]float64{i2: 20})
	h := ops.Handler(reg, nil)
	_, body := get(t, h, "/metrics")
	for _, want := range []string{`sha256="aa"} 100`, `sha256="cc"} 20`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, `sha256="bb"`) {
		t.Errorf("the replaced intermediate is still exported:\n%s", body)
	}
	var none *ops.CAExpiry
	none.Set(map[ops.CAKey]float64{r: 1}) // a nil CAExpiry does nothing
	if e, err := ops.NewCAExpiry(nil); e != nil || err != nil {
		t.Fatalf("NewCAExpiry(nil) = %v, %v", e, err)
	}
}
