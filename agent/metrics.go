package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshca/meshca/internal/ops"
)

// Metric names of the agent (see also crlRejectedMetricName,
// jwtRejectedMetricName and bundleRejectedMetricName).
const (
	expiryMetricName        = "meshca_agent_certificate_expiry_timestamp_seconds"
	renewalsMetricName      = "meshca_agent_renewals_total"
	sdsStreamsMetricName    = "meshca_agent_sds_streams"
	sdsPushesMetricName     = "meshca_agent_sds_pushes_total"
	sdsNacksMetricName      = "meshca_agent_sds_nacks_total"
	bundleUpdatesMetricName = "meshca_agent_bundle_updates_total"
)

// Results of renewalsMetricName and bundleUpdatesMetricName.
const (
	resultOK    = "ok"
	resultError = "error"
)

// registerCounterVec registers a counter named name with one label on reg
// and exports a zero for each of values, so that alerts see the series
// before the first event. A counter registered before under that name
// (another agent in the process) is shared.
func registerCounterVec(reg prometheus.Registerer, name, help, label string, values ...string) (*prometheus.CounterVec, error) {
	c, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label}))
	if err != nil {
		return nil, err
	}
	for _, v := range values {
		c.WithLabelValues(v)
	}
	return c, nil
}

// renewalMetrics follows the agent's certificate. A nil *renewalMetrics
// does nothing.
type renewalMetrics struct {
	renewals *prometheus.CounterVec
	expiry   prometheus.Gauge
}

func newRenewalMetrics(reg prometheus.Registerer) (*renewalMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &renewalMetrics{}
	var err error
	if m.renewals, err = registerCounterVec(reg, renewalsMetricName,
		"Certificate renewals by result: ok (a new certificate is served), error.", "result", resultOK, resultError); err != nil {
		return nil, err
	}
	if m.expiry, err = ops.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: expiryMetricName, Help: "NotAfter of the agent's current certificate in Unix seconds; 0 before the first.",
	})); err != nil {
		return nil, err
	}
	return m, nil
}

// renewed counts a renewal that ended with err; on success notAfter is the
// new certificate's.
func (m *renewalMetrics) renewed(notAfter time.Time, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.renewals.WithLabelValues(resultError).Inc()
		return
	}
	m.renewals.WithLabelValues(resultOK).Inc()
	m.expiry.Set(float64(notAfter.Unix()))
}

// sdsMetrics follows the SDS server. A nil *sdsMetrics does nothing.
type sdsMetrics struct {
	streams       prometheus.Gauge
	pushes, nacks prometheus.Counter
}

func newSDSMetrics(reg prometheus.Registerer) (*sdsMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &sdsMetrics{}
	var err error
	if m.streams, err = ops.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: sdsStreamsMetricName, Help: "Open SDS (StreamSecrets) streams.",
	})); err != nil {
		return nil, err
	}
	if m.pushes, err = ops.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: sdsPushesMetricName, Help: "SDS responses sent (stream pushes and FetchSecrets answers).",
	})); err != nil {
		return nil, err
	}
	if m.nacks, err = ops.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: sdsNacksMetricName, Help: "SDS responses the client rejected (requests carrying error_detail).",
	})); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *sdsMetrics) streamOpened() {
	if m != nil {
		m.streams.Inc()
	}
}

func (m *sdsMetrics) streamClosed() {
	if m != nil {
		m.streams.Dec()
	}
}

func (m *sdsMetrics) pushed() {
	if m != nil {
		m.pushes.Inc()
	}
}

func (m *sdsMetrics) nacked() {
	if m != nil {
		m.nacks.Inc()
	}
}
