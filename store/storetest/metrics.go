package storetest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshca/meshca/store"
)

// MetricsUnderTest is a store whose group commit reports to the metrics it
// was opened with.
type MetricsUnderTest interface {
	store.Store
	store.AuditHeadReader
}

// RunMetrics checks a backend's metrics: open must return a new, empty
// store whose GroupCommitConfig.Metrics is m. A committed issuance is
// observed by the commit histograms, Probe exports the audit head, and
// Probe on a closed store counts a ping error.
func RunMetrics(t *testing.T, open func(t *testing.T, m *store.Metrics) MetricsUnderTest) {
	reg := prometheus.NewPedanticRegistry()
	m, err := store.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{store.OpCommit, store.OpPing} {
		if got := storeErrors(t, reg, op); got != 0 {
			t.Fatalf("errors{op=%q} = %v before any error, want an exported 0", op, got)
		}
	}
	s := open(t, m)
	Seed(t, s, 3)
	commits := histogramCount(t, reg, store.CommitDurationMetric)
	if commits < 1 || commits > 3 {
		t.Fatalf("%s observed %d commits for 3 sequential writes", store.CommitDurationMetric, commits)
	}
	if got := histogramSum(t, reg, store.CommitBatchSizeMetric); got != 3 {
		t.Fatalf("%s sums to %v items, want 3", store.CommitBatchSizeMetric, got)
	}
	if err := m.Probe(t.Context(), s); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if got := gaugeValue(t, reg, store.AuditHeadSeqMetric); got != 3 {
		t.Fatalf("%s = %v after 3 events, want 3", store.AuditHeadSeqMetric, got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Probe(t.Context(), s); err == nil {
		t.Fatal("Probe of a closed store: want an error")
	}
	if got := storeErrors(t, reg, store.OpPing); got != 1 {
		t.Fatalf("errors{op=ping} = %v after one failed probe, want 1", got)
	}
}

func gather(t *testing.T, reg prometheus.Gatherer, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	t.Fatalf("metric %s not exported", name)
	return nil
}

func histogramCount(t *testing.T, reg prometheus.Gatherer, name string) uint64 {
	t.Helper()
	return gather(t, reg, name)[0].GetHistogram().GetSampleCount()
}

func histogramSum(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	return gather(t, reg, name)[0].GetHistogram().GetSampleSum()
}

func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	return gather(t, reg, name)[0].GetGauge().GetValue()
}

// storeErrors returns meshca_store_errors_total{op}.
func storeErrors(t *testing.T, reg prometheus.Gatherer, op string) float64 {
	t.Helper()
	for _, m := range gather(t, reg, store.ErrorsMetric) {
		for _, l := range m.GetLabel() {
			if l.GetName() == "op" && l.GetValue() == op {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("%s{op=%q} not exported", store.ErrorsMetric, op)
	return 0
}
