package issuer

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/ops"
)

// Names of the issuer's metrics.
const (
	RequestsMetric            = "meshca_issuer_requests_total"
	RequestDurationMetric     = "meshca_issuer_request_duration_seconds"
	AttestationFailuresMetric = "meshca_issuer_attestation_failures_total"
	DeniedMetric              = "meshca_issuer_denied_total"
	JWTSVIDsMetric            = "meshca_issuer_jwt_svids_total"
)

// Reasons of meshca_issuer_attestation_failures_total: a fixed set, so that
// a token's content never becomes a label value.
const (
	// AttestInvalidToken: malformed, badly signed, wrong issuer or subject,
	// pod gone: any rejected token not covered by a narrower reason.
	AttestInvalidToken = "invalid_token"
	// AttestExpired: the token is expired or not yet valid.
	AttestExpired = "expired"
	// AttestAudience: the token is meant for someone else.
	AttestAudience = "audience"
	// AttestUnknownCluster: the request names a cluster not served.
	AttestUnknownCluster = "unknown_cluster"
	// AttestNotAllowed: the attestation policy refuses the identity.
	AttestNotAllowed = "not_allowed"
	// AttestUnavailable: the attestor could not decide (API server or JWKS
	// endpoint unreachable).
	AttestUnavailable = "unavailable"
	// AttestRateLimited: the caller's address failed attestation too often
	// lately; the request was refused without attesting its token.
	AttestRateLimited = "rate_limited"
	// AttestOther: an error outside the attestor's contract.
	AttestOther = "other"
)

// Reasons of meshca_issuer_denied_total.
const (
	// DeniedRevoked: the identity is revoked.
	DeniedRevoked = "revoked"
	// DeniedPolicy: the attested identity may not have a certificate (its
	// namespace or service account makes no valid SPIFFE ID).
	DeniedPolicy = "policy"
	// DeniedNames: the CSR asks for names the identity may not have: a
	// DNS name without a DNSGrant for it, or another SPIFFE ID.
	DeniedNames = "names"
)

// attestReasons and deniedReasons are exported at 0 from the start.
var (
	attestReasons = []string{AttestInvalidToken, AttestExpired, AttestAudience, AttestUnknownCluster, AttestNotAllowed,
		AttestUnavailable, AttestRateLimited, AttestOther}
	deniedReasons = []string{DeniedRevoked, DeniedPolicy, DeniedNames}
)

// attestReason classifies an attestation error into attestReasons.
func attestReason(err error) string {
	switch {
	case errors.Is(err, errAttestLimited):
		return AttestRateLimited
	case errors.Is(err, attest.ErrUnavailable):
		return AttestUnavailable
	case !errors.Is(err, attest.ErrUnauthenticated):
		return AttestOther
	case errors.Is(err, attest.ErrExpired):
		return AttestExpired
	case errors.Is(err, attest.ErrAudience):
		return AttestAudience
	case errors.Is(err, attest.ErrUnknownCluster):
		return AttestUnknownCluster
	case errors.Is(err, attest.ErrNotAllowed):
		return AttestNotAllowed
	}
	return AttestInvalidToken
}

// numCodes is one past the largest gRPC code (Unauthenticated).
const numCodes = int(codes.Unauthenticated) + 1

// metrics are the issuer's counters, their children resolved once so that
// the hot path only adds. A nil *metrics records nothing.
type metrics struct {
	// local is the issuer's own cluster, the label of requests naming no
	// configured cluster.
	local    string
	requests map[string]*[numCodes]prometheus.Counter // by cluster
	duration prometheus.Observer
	attest   map[string]map[string]prometheus.Counter // by cluster, reason
	denied   map[string]prometheus.Counter
	jwt      [numCodes]prometheus.Counter // by gRPC code
}

// newMetrics registers the issuer's metrics with reg for the issuer's
// cluster and the other clusters it attests; a nil reg means no metrics
// (a nil *metrics).
func newMetrics(reg prometheus.Registerer, cluster string, others []string) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	requests, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: RequestsMetric,
		Help: "CreateCertificate calls by cluster and gRPC status code.",
	}, []string{"cluster", "code"}))
	if err != nil {
		return nil, err
	}
	duration, err := ops.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    RequestDurationMetric,
		Help:    "CreateCertificate latency in seconds, whatever the outcome.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}))
	if err != nil {
		return nil, err
	}
	failures, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: AttestationFailuresMetric,
		Help: "Workload credentials that failed attestation, by cluster and reason (" + fmt.Sprint(attestReasons) + ").",
	}, []string{"cluster", "reason"}))
	if err != nil {
		return nil, err
	}
	denied, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: DeniedMetric,
		Help: "Certificate requests of attested workloads refused, by reason (revoked, policy, names).",
	}, []string{"reason"}))
	if err != nil {
		return nil, err
	}
	jwts, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: JWTSVIDsMetric,
		Help: "MintJWTSVID calls by result (the gRPC status code).",
	}, []string{"result"}))
	if err != nil {
		return nil, err
	}
	m := &metrics{local: cluster, duration: duration, requests: map[string]*[numCodes]prometheus.Counter{},
		attest: map[string]map[string]prometheus.Counter{}, denied: map[string]prometheus.Counter{}}
	for _, cl := range append([]string{cluster}, others...) {
		if m.requests[cl] != nil {
			continue
		}
		var byCode [numCodes]prometheus.Counter
		for c := range numCodes {
			byCode[c] = requests.WithLabelValues(cl, codes.Code(c).String())
		}
		m.requests[cl] = &byCode
		m.attest[cl] = map[string]prometheus.Counter{}
		for _, r := range attestReasons {
			m.attest[cl][r] = failures.WithLabelValues(cl, r)
		}
	}
	for _, r := range deniedReasons {
		m.denied[r] = denied.WithLabelValues(r)
	}
	for c := range numCodes {
		m.jwt[c] = jwts.WithLabelValues(codes.Code(c).String())
	}
	return m, nil
}

// cluster is the label value for a request naming clusterID: that cluster
// when it is one of the configured ones, else the issuer's own (an alias,
// or anything a caller made up, never becomes a label).
func (m *metrics) cluster(clusterID string) string {
	if _, ok := m.requests[clusterID]; ok {
		return clusterID
	}
	return m.local
}

// request records one CreateCertificate call for clusterID answered with
// code after d.
func (m *metrics) request(clusterID string, code codes.Code, d time.Duration) {
	if m == nil {
		return
	}
	if int(code) < numCodes {
		m.requests[m.cluster(clusterID)][code].Inc()
	}
	m.duration.Observe(d.Seconds())
}

// attestFailed records an attestation failure of a request for clusterID.
func (m *metrics) attestFailed(clusterID string, err error) {
	if m != nil {
		m.attest[m.cluster(clusterID)][attestReason(err)].Inc()
	}
}

// deny records a refusal for reason (one of deniedReasons).
func (m *metrics) deny(reason string) {
	if m != nil {
		m.denied[reason].Inc()
	}
}

// deniedNames counts a CSR refusal that is a denial (DeniedNames), not a
// malformed request.
func (m *metrics) deniedNames(err error) {
	if errors.Is(err, ErrPermissionDenied) {
		m.deny(DeniedNames)
	}
}

// jwtSVID records one MintJWTSVID call answered with code.
func (m *metrics) jwtSVID(code codes.Code) {
	if m != nil && int(code) < numCodes {
		m.jwt[code].Inc()
	}
}
