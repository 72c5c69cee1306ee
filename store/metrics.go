package store

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshca/meshca/internal/ops"
)

// Names of the store's metrics.
const (
	CommitDurationMetric  = "meshca_store_commit_duration_seconds"
	CommitBatchSizeMetric = "meshca_store_commit_batch_size"
	ErrorsMetric          = "meshca_store_errors_total"
	AuditHeadSeqMetric    = "meshca_audit_head_seq"
)

// Operations of meshca_store_errors_total: a fixed set.
const (
	// OpCommit: a group commit's transaction failed (every write in it
	// failed).
	OpCommit = "commit"
	// OpPing: reading the audit head, the readiness probe of the store,
	// failed.
	OpPing = "ping"
	// OpRevocations: loading the revocations in force (an issuer's
	// deny-list reload) failed.
	OpRevocations = "revocations"
)

var errorOps = []string{OpCommit, OpPing, OpRevocations}

// Metrics are a store's Prometheus metrics, shared by both backends: the
// group commit observes its transactions (GroupCommitConfig.Metrics) and
// Probe reads the audit head. A nil *Metrics records nothing.
type Metrics struct {
	commitDuration prometheus.Observer
	batchSize      prometheus.Observer
	errors         map[string]prometheus.Counter
	auditHead      prometheus.Gauge
}

// NewMetrics registers the store's metrics with reg (sharing those another
// component of the process registered); a nil reg returns a nil *Metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, nil
	}
	dur, err := ops.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    CommitDurationMetric,
		Help:    "Duration of one group commit (one transaction) in seconds.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}))
	if err != nil {
		return nil, err
	}
	size, err := ops.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    CommitBatchSizeMetric,
		Help:    "Writes committed in one group commit.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	}))
	if err != nil {
		return nil, err
	}
	errs, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: ErrorsMetric,
		Help: "Store operations that failed, by operation (commit, ping, revocations).",
	}, []string{"op"}))
	if err != nil {
		return nil, err
	}
	head, err := ops.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: AuditHeadSeqMetric,
		Help: "Sequence number of the audit chain's head, as last read (0 for an empty log).",
	}))
	if err != nil {
		return nil, err
	}
	m := &Metrics{commitDuration: dur, batchSize: size, errors: map[string]prometheus.Counter{}, auditHead: head}
	for _, op := range errorOps {
		m.errors[op] = errs.WithLabelValues(op)
	}
	return m, nil
}

// commit records one group commit of n items that took d and failed with
// err (nil: committed).
func (m *Metrics) commit(n int, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.commitDuration.Observe(d.Seconds())
	m.batchSize.Observe(float64(n))
	if err != nil {
		m.errors[OpCommit].Inc()
	}
}

// Failed counts one failed store operation op (one of the Op constants).
// A nil *Metrics does nothing.
func (m *Metrics) Failed(op string) {
	if m == nil {
		return
	}
	if c, ok := m.errors[op]; ok {
		c.Inc()
	}
}

// Probe reads the audit head of r within ctx, the cheapest query that
// proves the store answers, and exports its sequence number. A failure is
// counted (op "ping") and returned. A nil *Metrics only reads.
func (m *Metrics) Probe(ctx context.Context, r AuditHeadReader) error {
	head, err := r.AuditHead(ctx)
	if m == nil {
		return err
	}
	if err != nil {
		m.errors[OpPing].Inc()
		return err
	}
	m.auditHead.Set(float64(head.Seq))
	return nil
}
