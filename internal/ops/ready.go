package ops

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// ReadyMetricName is the gauge of readiness: 1 while every check holds, 0
// otherwise. Alerts on readiness read it.
const ReadyMetricName = "meshca_ready"

// ReadyGauge returns a gauge that runs checks at every scrape, so that the
// metric and /readyz never disagree. component labels it (issuer, root,
// agent).
func ReadyGauge(component string, checks Checks) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        ReadyMetricName,
		Help:        "1 while the process is ready (every readiness check holds, as /readyz), else 0.",
		ConstLabels: prometheus.Labels{"component": component},
	}, func() float64 {
		if checks.Ready(context.Background()) != nil {
			return 0
		}
		return 1
	})
}
