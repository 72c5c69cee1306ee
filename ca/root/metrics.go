package root

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// warnInterval spaces the repeated warnings about one CA close to expiry.
const warnInterval = time.Hour

// expiryMetrics exports the NotAfter of every root in the bundle and of the
// newest valid intermediate of each cluster. A nil *expiryMetrics does
// nothing.
type expiryMetrics struct{ e *ops.CAExpiry }

func newExpiryMetrics(reg prometheus.Registerer) (*expiryMetrics, error) {
	e, err := ops.NewCAExpiry(reg)
	if err != nil || e == nil {
		return nil, err
	}
	return &expiryMetrics{e: e}, nil
}

func (m *expiryMetrics) set(roots []RootStatus, newest map[string]store.Intermediate) {
	if m == nil {
		return
	}
	now := map[ops.CAKey]float64{}
	for _, s := range roots {
		if s.State.InBundle() {
			now[ops.CAKey{Kind: "root", SHA256: fingerprintHex(s.Cert)}] = float64(s.Cert.NotAfter.Unix())
		}
	}
	for cluster, in := range newest {
		now[ops.CAKey{Kind: "intermediate", Cluster: cluster, SHA256: in.Fingerprint}] = float64(in.NotAfter.Unix())
	}
	m.e.Set(now)
}

// alarmLocked warns, at most once per warnInterval per root, about an
// active or prepared root with less than 1/6 of its life left, and about
// having no active root.
func (r *Root) alarmLocked(ctx context.Context, now time.Time) {
	due := func(key [32]byte) bool {
		if last, ok := r.warned[key]; ok && now.Sub(last) < warnInterval {
			return false
		}
		r.warned[key] = now
		return true
	}
	active, successor := false, false
	for _, s := range r.statuses {
		switch s.State {
		case RootActive:
			active = true
		case RootPrepared:
			successor = true
		default:
			continue
		}
		c := s.Cert
		if c.NotAfter.Sub(now) < c.NotAfter.Sub(c.NotBefore)/6 && due(trust.Fingerprint(c)) {
			r.log.WarnContext(ctx, "root CA expires soon", "sha256", fingerprintHex(c), "state", string(s.State),
				"not_after", c.NotAfter.UTC(), "left", c.NotAfter.Sub(now).Round(time.Second))
		}
	}
	if !active && due([32]byte{}) {
		r.log.ErrorContext(ctx, "no active root: nothing can be signed", "prepared_root", successor)
	}
}

// reuseMetricName counts issuer credentials presented after the root had
// replaced them and their successor had been used: two parties held
// credentials of one cluster. Label: cluster.
const reuseMetricName = "meshca_root_credential_reuse_total"

// reuseCounter counts credential reuse. A nil *reuseCounter does nothing.
type reuseCounter struct{ c *prometheus.CounterVec }

func newReuseCounter(reg prometheus.Registerer) (*reuseCounter, error) {
	if reg == nil {
		return nil, nil
	}
	c, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: reuseMetricName,
		Help: "Issuer credentials presented after they were replaced and their successor was used (a copy in use), by cluster.",
	}, []string{"cluster"}))
	if err != nil {
		return nil, err
	}
	return &reuseCounter{c: c}, nil
}

// known exports the series of an enrolled cluster (one with a valid
// intermediate) at 0 until its first reuse, so that alerts see it.
func (m *reuseCounter) known(cluster string) {
	if m != nil {
		m.c.WithLabelValues(cluster)
	}
}

func (m *reuseCounter) inc(cluster string) {
	if m != nil {
		m.c.WithLabelValues(cluster).Inc()
	}
}
