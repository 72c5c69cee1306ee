package ops

import "github.com/prometheus/client_golang/prometheus"

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
