// Package promtest runs Prometheus's own tools for tests: `promtool` to
// check and unit-test the alerting rules and the dashboard's queries in
// deploy/observability, and a real `prometheus` server on 127.0.0.1 that
// scrapes meshca processes and evaluates those rules. It also reads the
// rules file, the PrometheusRule manifest and the Grafana dashboard, and
// finds the meshca metric names they use. It is test support only;
// production code never imports it.
//
// The binaries come from Debian's prometheus package, unpacked by `make
// testbed-prometheus` (test/testbed/prometheus.mk), and are found through
// $MESHCA_TEST_PROMTOOL and $MESHCA_TEST_PROMETHEUS, else in
// ${XDG_CACHE_HOME:-$HOME/.cache}/meshca-testbed/prometheus-VERSION/usr/bin.
// Without them tests skip, or fail when CI=true.
package promtest

import (
	"path/filepath"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// Version and environment variables of the test bed.
const (
	// Version is the Debian package version, as in test/testbed/prometheus.mk.
	Version       = "2.42.0+ds-5+deb12u1"
	EnvPromtool   = "MESHCA_TEST_PROMTOOL"
	EnvPrometheus = "MESHCA_TEST_PROMETHEUS"
)

// Promtool returns the promtool binary; see Bin.
func Promtool(tb testing.TB) string {
	tb.Helper()
	return Bin(tb, EnvPromtool, "promtool")
}

// Prometheus returns the prometheus server binary; see Bin.
func Prometheus(tb testing.TB) string {
	tb.Helper()
	return Bin(tb, EnvPrometheus, "prometheus")
}

// Bin returns $env, else the binary name where `make testbed-prometheus`
// unpacks it. It skips the test when the binary is missing, or fails it
// under CI=true, where `make test` must have installed it.
func Bin(tb testing.TB, env, name string) string {
	tb.Helper()
	return testkit.TestbedBin(tb, env, filepath.Join("prometheus-"+Version, "usr", "bin", name), name, "testbed-prometheus")
}

// Dir is the absolute path of deploy/observability in this checkout.
func Dir() string { return filepath.Join(testkit.ModuleRoot(), "deploy", "observability") }

// Paths of the files in Dir.
var (
	RulesFile      = filepath.Join(Dir(), "alerts.yaml")
	RulesTestFile  = filepath.Join(Dir(), "alerts_test.yaml")
	PrometheusRule = filepath.Join(Dir(), "prometheusrule.yaml")
	DashboardFile  = filepath.Join(Dir(), "grafana-dashboard.json")
)
