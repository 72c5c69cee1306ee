package root

import (
	"crypto"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/ops"
)

// Metric names of the root's service (see also reuseMetricName and the CA
// metrics of internal/ops).
const (
	enrolmentsMetricName = "meshca_root_enrolments_total"
	renewalsMetricName   = "meshca_root_renewals_total"
	signerMetricName     = "meshca_root_signer_duration_seconds"
	sequenceMetricName   = "meshca_root_bundle_sequence"
	leaderMetricName     = "meshca_root_leader"
)

// Results of an enrolment or a renewal: ok; refused, the caller's fault
// (bad or used token, revoked or reused credential, malformed request);
// error, ours or a dependency's (store, root key).
const (
	resultOK      = "ok"
	resultRefused = "refused"
	resultError   = "error"
)

// Signer backends, the label of the signing histogram.
const (
	backendFile  = "file"
	backendVault = "vault"
)

// serviceMetrics counts the root's calls and follows its state. A nil
// *serviceMetrics does nothing.
type serviceMetrics struct {
	enrolments, renewals *prometheus.CounterVec
	signer               *prometheus.HistogramVec
	sequence, leader     prometheus.Gauge
	crlNextUpdate        *prometheus.GaugeVec
}

func newServiceMetrics(reg prometheus.Registerer) (*serviceMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &serviceMetrics{}
	var err error
	results := []string{resultOK, resultRefused, resultError}
	if m.enrolments, err = registerResults(reg, enrolmentsMetricName,
		"Issuer enrolments (Enroll calls) by result: ok, refused (the caller's fault), error (the root's or its store's or key's).", results); err != nil {
		return nil, err
	}
	if m.renewals, err = registerResults(reg, renewalsMetricName,
		"Issuer credential renewals (Renew calls) by result: ok, refused (the caller's fault), error (the root's or its store's or key's).", results); err != nil {
		return nil, err
	}
	if m.signer, err = ops.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    signerMetricName,
		Help:    "Duration of one signing operation with a root key, by key backend (file, vault).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"backend"})); err != nil {
		return nil, err
	}
	for _, b := range []string{backendFile, backendVault} {
		m.signer.WithLabelValues(b)
	}
	if m.sequence, err = ops.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: sequenceMetricName, Help: "Sequence number of the trust bundle the root serves.",
	})); err != nil {
		return nil, err
	}
	if m.leader, err = ops.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: leaderMetricName,
		Help: "1 while this root replica holds its store's leader lease (creates roots, signs root CRLs), else 0.",
	})); err != nil {
		return nil, err
	}
	if m.crlNextUpdate, err = ops.RegisterCRLNextUpdate(reg); err != nil {
		return nil, err
	}
	return m, nil
}

func registerResults(reg prometheus.Registerer, name, help string, results []string) (*prometheus.CounterVec, error) {
	c, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"result"}))
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		c.WithLabelValues(r)
	}
	return c, nil
}

// resultOf classifies the gRPC status a call ended with.
func resultOf(err error) string {
	switch status.Code(err) {
	case codes.OK:
		return resultOK
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.NotFound,
		codes.AlreadyExists, codes.FailedPrecondition, codes.ResourceExhausted, codes.Canceled:
		return resultRefused
	}
	return resultError
}

func (m *serviceMetrics) enrolled(err error) {
	if m != nil {
		m.enrolments.WithLabelValues(resultOf(err)).Inc()
	}
}

func (m *serviceMetrics) renewed(err error) {
	if m != nil {
		m.renewals.WithLabelValues(resultOf(err)).Inc()
	}
}

func (m *serviceMetrics) setSequence(seq uint64) {
	if m != nil {
		m.sequence.Set(float64(seq))
	}
}

func (m *serviceMetrics) setLeader(lead bool) {
	if m == nil {
		return
	}
	v := 0.0
	if lead {
		v = 1
	}
	m.leader.Set(v)
}

// setRootCRLs exports the earliest NextUpdate of crls, or nothing while
// there is none.
func (m *serviceMetrics) setRootCRLs(crls map[[32]byte]*rootCRL) {
	if m == nil {
		return
	}
	var earliest time.Time
	for _, c := range crls {
		if earliest.IsZero() || c.nextUpdate.Before(earliest) {
			earliest = c.nextUpdate
		}
	}
	if earliest.IsZero() {
		m.crlNextUpdate.DeleteLabelValues("root")
		return
	}
	m.crlNextUpdate.WithLabelValues("root").Set(float64(earliest.Unix()))
}

// timed returns s timing every signature into the signing histogram; s
// itself when m is nil.
func (m *serviceMetrics) timed(s crypto.Signer) crypto.Signer {
	if m == nil || s == nil {
		return s
	}
	backend := backendFile
	if _, ok := s.(*vault.Signer); ok {
		backend = backendVault
	}
	return timedSigner{Signer: s, obs: m.signer.WithLabelValues(backend)}
}

// timedSigner is a root key that observes the duration of each signature.
// It closes the key it wraps when that is an io.Closer (a Vault client).
type timedSigner struct {
	crypto.Signer
	obs prometheus.Observer
}

func (t timedSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	defer func() { t.obs.Observe(time.Since(start).Seconds()) }()
	return t.Signer.Sign(rand, digest, opts)
}

// Close implements io.Closer for keys that need closing.
func (t timedSigner) Close() error {
	if c, ok := t.Signer.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
