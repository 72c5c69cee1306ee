// Package observability holds no code: this directory ships meshca's
// Prometheus alerting rules (alerts.yaml, and the same as a
// PrometheusRule in prometheusrule.yaml), their promtool unit tests
// (alerts_test.yaml) and a Grafana dashboard (grafana-dashboard.json). The
// package's tests check them with Prometheus's own promtool; test/e2e
// checks them against running processes and a real Prometheus server.
package observability
