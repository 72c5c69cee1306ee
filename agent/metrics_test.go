package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshca/meshca/agent/sdstest"
	"github.com/meshca/meshca/internal/testkit"
)

// metricValue returns the value of the counter or gauge name in g, with
// label = value when label is not empty; ok false when there is no such
// series.
func metricValue(t testing.TB, g prometheus.Gatherer, name, label, value string) (v float64, ok bool) {
	t.Helper()
	var labels []string
	if label != "" {
		labels = []string{label, value}
	}
	if m := testkit.Series(t, g, name, labels...); m != nil {
		return testkit.Value(m), true
	}
	return 0, false
}

// waitMetric waits until name{label=value} in g satisfies ok.
func waitMetric(t testing.TB, g prometheus.Gatherer, name, label, value, want string, ok func(float64) bool) {
	t.Helper()
	testkit.Eventually(t, waitTimeout, fmt.Sprintf("%s{%s=%q} %s", name, label, value, want), func() error {
		v, found := metricValue(t, g, name, label, value)
		if !found {
			return fmt.Errorf("%s{%s=%q} is not exported", name, label, value)
		}
		if !ok(v) {
			return fmt.Errorf("%s{%s=%q} = %v", name, label, value, v)
		}
		return nil
	})
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
func equal(n float64) func(float64) bool   { return func(v float64) bool { return v == n } }

// A running agent's metrics follow its renewals, its SDS streams (pushes
// and NACKs) and the trust bundles it receives, and its health listener
// serves them with the agent's readiness.
func TestAgentMetricsFollowRenewalsSDSAndBundles(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now().Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, true)
	fi.pushBundle(signedProto(t, trustBundle(10, "cluster.local", []*x509.Certificate{tree.Root.Certificate}, nil), tree.Root))
	reg := prometheus.NewRegistry()
	ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), 3*time.Second, func(c *Config) { c.Registerer = reg })

	// Known label values are exported before any event.
	for _, name := range []string{renewalsMetricName, bundleUpdatesMetricName} {
		if _, ok := metricValue(t, reg, name, "result", resultError); !ok {
			t.Errorf("%s{result=error} not exported from the start", name)
		}
	}

	e := envoy(t, ra.cfg.SDSSocket, "node")
	s := subscribe(t, e, ResourceDefault)
	first := next(t, s)
	waitMetric(t, reg, sdsStreamsMetricName, "", "", "= 1", equal(1))
	waitMetric(t, reg, sdsPushesMetricName, "", "", ">= 1", atLeast(1))

	// A rotation: renewals ok moves and the expiry gauge is the NotAfter of
	// the certificate served.
	rotated := nextUntil(t, s, "a rotated certificate", func(u *sdstest.Update) bool { return !u.Chain[0].Equal(first.Chain[0]) })
	waitMetric(t, reg, renewalsMetricName, "result", resultOK, ">= 2", atLeast(2))
	waitMetric(t, reg, sdsPushesMetricName, "", "", ">= 2", atLeast(2))
	testkit.Eventually(t, waitTimeout, "expiry gauge = NotAfter of the published certificate", func() error {
		snap, _ := ra.pub.Current()
		v, _ := metricValue(t, reg, expiryMetricName, "", "")
		if want := float64(snap.NotAfter().Unix()); v != want {
			return fmt.Errorf("%s = %v, current certificate's NotAfter %v", expiryMetricName, v, want)
		}
		return nil
	})
	if v, _ := metricValue(t, reg, expiryMetricName, "", ""); v < float64(rotated.Chain[0].NotAfter.Unix()) {
		t.Errorf("%s = %v, before the rotated certificate's NotAfter %v", expiryMetricName, v, rotated.Chain[0].NotAfter.Unix())
	}

	// A NACK.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(t, reg, sdsNacksMetricName, "", ""); v != 0 {
		t.Fatalf("%s = %v before any NACK", sdsNacksMetricName, v)
	}
	if err := s.NACK(resp, "rejected by the test"); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, reg, sdsNacksMetricName, "", "", "= 1", equal(1))

	// Bundles: the signed one applied; an older one refused.
	waitMetric(t, reg, bundleUpdatesMetricName, "result", resultOK, ">= 1", atLeast(1))
	fi.pushBundle(signedProto(t, trustBundle(5, "cluster.local", []*x509.Certificate{tree.Root.Certificate}, nil), tree.Root))
	waitMetric(t, reg, bundleUpdatesMetricName, "result", resultError, "= 1", equal(1))

	// The health listener serves every agent metric and readiness.
	body := scrape(t, "http://"+ra.boundHealthAddr()+"/metrics")
	for _, name := range []string{expiryMetricName, renewalsMetricName, sdsStreamsMetricName, sdsPushesMetricName,
		sdsNacksMetricName, bundleUpdatesMetricName, crlRejectedMetricName, bundleRejectedMetricName, jwtRejectedMetricName} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if !strings.Contains(body, `meshca_ready{component="agent"} 1`) {
		t.Errorf("/metrics lacks meshca_ready{component=\"agent\"} 1")
	}

	s.Close()
	waitMetric(t, reg, sdsStreamsMetricName, "", "", "= 0 once the stream closed", equal(0))
}

func scrape(t testing.TB, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: waitTimeout}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// Renewals count by result, and the expiry gauge is the NotAfter of the
// certificate a successful renewal obtained.
func TestRenewalMetrics(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now()})
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "b.pem"), string(tree.Bundle.PEM()))
	reg := prometheus.NewRegistry()
	m, err := newManager(managerConfig{Fetcher: &fakeFetcher{tree: tree, id: webID, ttl: time.Hour}, Publisher: newPublisher(),
		TokenFile: filepath.Join(dir, "token"), CABundleFile: filepath.Join(dir, "b.pem"), Registerer: reg, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	value := func(name, result string) float64 {
		v, ok := metricValue(t, reg, name, "result", result)
		if !ok {
			t.Fatalf("%s{result=%q} not exported", name, result)
		}
		return v
	}
	if v, ok := metricValue(t, reg, expiryMetricName, "", ""); !ok || v != 0 {
		t.Fatalf("%s = %v (exported %v) before any certificate, want 0", expiryMetricName, v, ok)
	}
	if _, err := m.Renew(t.Context()); err == nil {
		t.Fatal("renewal without a token file succeeded")
	}
	if ok, failed := value(renewalsMetricName, resultOK), value(renewalsMetricName, resultError); ok != 0 || failed != 1 {
		t.Fatalf("after a failed renewal: ok %v, error %v; want 0 and 1", ok, failed)
	}
	writeTestFile(t, filepath.Join(dir, "token"), "tok")
	for i := range 2 {
		v, err := m.Renew(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ok := value(renewalsMetricName, resultOK); ok != float64(i+1) {
			t.Fatalf("after %d renewals: ok %v", i+1, ok)
		}
		snap, _ := m.cfg.Publisher.Current()
		got, _ := metricValue(t, reg, expiryMetricName, "", "")
		if got != float64(v.NotAfter.Unix()) || !snap.NotAfter().Equal(v.NotAfter) {
			t.Fatalf("%s = %v, certificate NotAfter %v (served %v)", expiryMetricName, got, v.NotAfter.Unix(), snap.NotAfter())
		}
	}
}
