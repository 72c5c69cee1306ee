package root

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/testkit"
)

// series returns the series name{label=value} (label "" for a metric
// without labels); it fails the test when it is absent.
func series(t testing.TB, reg *prometheus.Registry, name, label, value string) *dto.Metric {
	t.Helper()
	var labels []string
	if label != "" {
		labels = []string{label, value}
	}
	m := testkit.Series(t, reg, name, labels...)
	if m == nil {
		t.Fatalf("%s{%s=%q} is not exported", name, label, value)
	}
	return m
}

func counterValue(t testing.TB, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	return series(t, reg, name, "result", result).GetCounter().GetValue()
}

func TestServiceMetricsFollowEnrolmentsAndRenewals(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, func(c *Config) { c.Registerer = reg })
	for _, name := range []string{enrolmentsMetricName, renewalsMetricName} {
		for _, res := range []string{resultOK, resultRefused, resultError} {
			if v := counterValue(t, reg, name, res); v != 0 {
				t.Fatalf("%s{result=%q} = %v before any call, want 0", name, res, v)
			}
		}
	}
	// Both backends are exported; creating the first root signed with its
	// key.
	series(t, reg, signerMetricName, "backend", backendVault)
	fileSigns := func() uint64 {
		return series(t, reg, signerMetricName, "backend", backendFile).GetHistogram().GetSampleCount()
	}
	before := fileSigns()
	if before == 0 {
		t.Fatal("creating the first root observed no signature")
	}

	addr := h.serve()
	side := h.mustEnroll(addr, "east", "east.example")
	if v := counterValue(t, reg, enrolmentsMetricName, resultOK); v != 1 {
		t.Fatalf("enrolments ok = %v after one enrolment, want 1", v)
	}
	if fileSigns() < before+2 {
		t.Fatalf("signatures %d -> %d: the credential and intermediate were not timed", before, fileSigns())
	}
	_, err := enroll(t, h.dial(addr, nil), "not-a-token")
	wantCode(t, err, codes.Unauthenticated)
	if v := counterValue(t, reg, enrolmentsMetricName, resultRefused); v != 1 {
		t.Fatalf("enrolments refused = %v after a bad token, want 1", v)
	}

	if _, err := renew(t, h.dial(addr, side.tlsCert()), side, true); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if v := counterValue(t, reg, renewalsMetricName, resultOK); v != 1 {
		t.Fatalf("renewals ok = %v after one renewal, want 1", v)
	}
	_, err = renew(t, h.dial(addr, nil), side, true)
	wantCode(t, err, codes.Unauthenticated)
	if v := counterValue(t, reg, renewalsMetricName, resultRefused); v != 1 {
		t.Fatalf("renewals refused = %v after a renewal without credential, want 1", v)
	}
	if v := counterValue(t, reg, renewalsMetricName, resultError); v != 0 {
		t.Fatalf("renewals error = %v, want 0", v)
	}

	b, _ := h.root.Current()
	if got := series(t, reg, sequenceMetricName, "", "").GetGauge().GetValue(); got != float64(b.Sequence) || got == 0 {
		t.Fatalf("%s = %v, bundle sequence %d", sequenceMetricName, got, b.Sequence)
	}
	if got := series(t, reg, leaderMetricName, "", "").GetGauge().GetValue(); got != 1 {
		t.Fatalf("%s = %v for a single root, want 1", leaderMetricName, got)
	}
	h.root.mu.Lock()
	var next float64
	for _, c := range h.root.rootCRLs {
		next = float64(c.nextUpdate.Unix())
	}
	h.root.mu.Unlock()
	if got := series(t, reg, ops.CRLNextUpdateMetric, "issuer", "root").GetGauge().GetValue(); got != next || got == 0 {
		t.Fatalf("%s{issuer=root} = %v, root CRL nextUpdate %v", ops.CRLNextUpdateMetric, got, next)
	}
}

func TestReadinessFollowsStoreAndRoot(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.root.Checks().Ready(context.Background()); err != nil {
		t.Fatalf("fresh root not ready: %v", err)
	}
	// Past the active root's NotAfter (before any re-evaluation).
	h.clock.Advance(h.activeRoot().NotAfter.Sub(h.clock.Now()) + 1)
	if err := h.root.Checks().Ready(context.Background()); err == nil || err.Error() != "ca: expired" {
		t.Fatalf("expired root: readiness %v, want ca: expired", err)
	}
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	err := h.root.Checks().Ready(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "store: unreachable: ") {
		t.Fatalf("closed store: readiness %v, want store: unreachable", err)
	}
}

// While Serve drains (its context ended), gRPC health says NOT_SERVING
// before the server stops.
func TestHealthNotServingWhileDraining(t *testing.T) {
	h := newHarness(t, nil)
	lis := testkit.Listen(t)
	stop := testkit.Go(t, "Serve", func(ctx context.Context) error { return h.root.Serve(ctx, lis) })
	conn := h.dial(lis.Addr().String(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.Recv()
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health while ready: %v, %v", resp.GetStatus(), err)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	resp, err = w.Recv()
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health while draining: %v, %v", resp.GetStatus(), err)
	}
	select {
	case <-stopped:
		t.Fatal("the server stopped before its health said NOT_SERVING was read")
	default:
	}
	cancel()
	<-stopped
}
