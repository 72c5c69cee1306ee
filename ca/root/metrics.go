package root

import (
	"context"
	"sync"
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
type expiryMetrics struct {
	gauge *prometheus.GaugeVec
	mu    sync.Mutex
	// ours are the label sets this root set, so that stale ones are deleted
	// without touching series someone else (an issuer in the same process)
	// sets on a shared gauge.
	ours map[[3]string]bool
}

func newExpiryMetrics(reg prometheus.Registerer) (*expiryMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	g, err := ops.RegisterCAExpiry(reg)
	if err != nil {
		return nil, err
	}
	return &expiryMetrics{gauge: g, ours: map[[3]string]bool{}}, nil
}

func (m *expiryMetrics) set(roots []RootStatus, newest map[string]store.Intermediate) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := map[[3]string]float64{}
	for _, s := range roots {
		if s.State.InBundle() {
			now[[3]string{"root", "", fingerprintHex(s.Cert)}] = float64(s.Cert.NotAfter.Unix())
		}
	}
	for cluster, in := range newest {
		now[[3]string{"intermediate", cluster, in.Fingerprint}] = float64(in.NotAfter.Unix())
	}
	for l := range m.ours {
		if _, ok := now[l]; !ok {
			m.gauge.DeleteLabelValues(l[0], l[1], l[2])
			delete(m.ours, l)
		}
	}
	for l, v := range now {
		m.gauge.WithLabelValues(l[0], l[1], l[2]).Set(v)
		m.ours[l] = true
	}
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
