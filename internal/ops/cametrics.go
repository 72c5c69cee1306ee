package ops

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics that every CA process (root and issuer) exports. They are
// defined once here: a process running both registers them twice, and
// Register shares a collector only when the two descriptions match.
const (
	// CAExpiryMetric is the NotAfter of a CA certificate, labelled kind
	// (root, intermediate, credential), cluster and sha256.
	CAExpiryMetric = "meshca_ca_expiry_timestamp_seconds"
	// CRLNextUpdateMetric is the nextUpdate of the CRLs a CA signs,
	// labelled issuer (a cluster name, or "root").
	CRLNextUpdateMetric = "meshca_crl_next_update_timestamp_seconds"
)

// RegisterCAExpiry registers (or shares) the CA expiry gauge on reg.
func RegisterCAExpiry(reg prometheus.Registerer) (*prometheus.GaugeVec, error) {
	return Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: CAExpiryMetric,
		Help: "NotAfter of a CA certificate in Unix seconds, by kind (root, intermediate, credential), cluster and SHA-256.",
	}, []string{"kind", "cluster", "sha256"}))
}

// RegisterCRLNextUpdate registers (or shares) the CRL nextUpdate gauge on
// reg.
func RegisterCRLNextUpdate(reg prometheus.Registerer) (*prometheus.GaugeVec, error) {
	return Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: CRLNextUpdateMetric,
		Help: "NextUpdate of the CRL a CA publishes in Unix seconds (the earliest, when it signs several), by issuer (a cluster name, or root).",
	}, []string{"issuer"}))
}

// CAKey labels one series of the CA expiry gauge.
type CAKey struct {
	// Kind is root, intermediate or credential.
	Kind string
	// Cluster is the cluster the certificate serves ("" for a root).
	Cluster string
	// SHA256 is the certificate's fingerprint, hex.
	SHA256 string
}

// CAExpiry is one component's share of the CA expiry gauge: Set replaces
// the series it set before and leaves those of another component of the
// process (a root and an issuer in one process share the gauge) alone. A
// nil *CAExpiry does nothing.
type CAExpiry struct {
	gauge *prometheus.GaugeVec
	mu    sync.Mutex
	ours  map[CAKey]bool
}

// NewCAExpiry registers (or shares) the CA expiry gauge on reg; a nil reg
// returns a nil *CAExpiry.
func NewCAExpiry(reg prometheus.Registerer) (*CAExpiry, error) {
	if reg == nil {
		return nil, nil
	}
	g, err := RegisterCAExpiry(reg)
	if err != nil {
		return nil, err
	}
	return &CAExpiry{gauge: g, ours: map[CAKey]bool{}}, nil
}

// Set exports notAfter (Unix seconds by series) and deletes the series the
// previous Set exported that notAfter lacks.
func (e *CAExpiry) Set(notAfter map[CAKey]float64) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.ours {
		if _, ok := notAfter[k]; !ok {
			e.gauge.DeleteLabelValues(k.Kind, k.Cluster, k.SHA256)
			delete(e.ours, k)
		}
	}
	for k, v := range notAfter {
		e.gauge.WithLabelValues(k.Kind, k.Cluster, k.SHA256).Set(v)
		e.ours[k] = true
	}
}
