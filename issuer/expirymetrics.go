package issuer

import (
	"crypto/x509"
	"encoding/hex"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/trust"
)

// Kinds of ops.CAExpiryMetric.
const (
	KindRoot         = "root"
	KindIntermediate = "intermediate"
	KindCredential   = "credential"
)

// CAState is what CAMetrics exports: the CA certificates an issuer holds
// and the CRLs it signs.
type CAState struct {
	// Held are the intermediates whose certificates may be in use
	// (Issuer.Held).
	Held []*ca.Authority
	// Roots are the trusted roots (Issuer.Bundle().Roots()).
	Roots []*x509.Certificate
	// Credential is the upstream credential; nil without a central root.
	Credential *x509.Certificate
	// CRLs are the CRLs the issuer signs (CRLSigner.Current).
	CRLs []trust.CRL
}

// CAMetrics exports the expiry of an issuer's CA certificates and the
// nextUpdate of its CRLs. It deletes only the series it set, so that the
// root in the same process keeps its own. A nil *CAMetrics does nothing.
type CAMetrics struct {
	cluster string
	expiry  *ops.CAExpiry
	crl     prometheus.Gauge
}

// NewCAMetrics registers the CA metrics of the issuer of cluster with reg;
// a nil reg returns a nil *CAMetrics.
func NewCAMetrics(reg prometheus.Registerer, cluster string) (*CAMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	expiry, err := ops.NewCAExpiry(reg)
	if err != nil {
		return nil, err
	}
	crls, err := ops.RegisterCRLNextUpdate(reg)
	if err != nil {
		return nil, err
	}
	return &CAMetrics{cluster: cluster, expiry: expiry, crl: crls.WithLabelValues(cluster)}, nil
}

// Set exports st, replacing what the previous Set exported.
func (m *CAMetrics) Set(st CAState) {
	if m == nil {
		return
	}
	now := map[ops.CAKey]float64{}
	for _, a := range st.Held {
		now[ops.CAKey{Kind: KindIntermediate, Cluster: m.cluster, SHA256: sha256Hex(a.Certificate)}] = float64(a.Certificate.NotAfter.Unix())
	}
	for _, r := range st.Roots {
		now[ops.CAKey{Kind: KindRoot, SHA256: sha256Hex(r)}] = float64(r.NotAfter.Unix())
	}
	if c := st.Credential; c != nil {
		now[ops.CAKey{Kind: KindCredential, Cluster: m.cluster, SHA256: sha256Hex(c)}] = float64(c.NotAfter.Unix())
	}
	m.expiry.Set(now)
	if next, ok := earliestNextUpdate(st.CRLs); ok {
		m.crl.Set(float64(next.Unix()))
	}
}

// earliestNextUpdate returns the earliest nextUpdate among crls that parse.
func earliestNextUpdate(crls []trust.CRL) (time.Time, bool) {
	var next time.Time
	for _, c := range crls {
		rl, err := x509.ParseRevocationList(c.DER)
		if err != nil || rl.NextUpdate.IsZero() {
			continue
		}
		if next.IsZero() || rl.NextUpdate.Before(next) {
			next = rl.NextUpdate
		}
	}
	return next, !next.IsZero()
}

func sha256Hex(c *x509.Certificate) string {
	fp := trust.Fingerprint(c)
	return hex.EncodeToString(fp[:])
}
