package pgtest

import (
	"testing"
	"time"

	"github.com/meshca/meshca/test/benchcpu"
)

// CPUMeter measures CPU time, for benchmarks on machines whose other load
// makes wall time noisy: this process's (all threads, user + system) and,
// when measuring a private Cluster, that of the database's processes.
type CPUMeter struct {
	cluster  *Cluster
	self, db time.Duration
}

// StartCPUMeter starts measuring; c may be nil (this process only).
func StartCPUMeter(tb testing.TB, c *Cluster) *CPUMeter {
	tb.Helper()
	m := &CPUMeter{cluster: c, self: benchcpu.Process(tb)}
	if c != nil {
		m.db = c.cpuTime(tb)
	}
	return m
}

// Stop returns the CPU time used since StartCPUMeter by this process and by
// the cluster (zero without one).
func (m *CPUMeter) Stop(tb testing.TB) (self, db time.Duration) {
	tb.Helper()
	self = benchcpu.Process(tb) - m.self
	if m.cluster != nil {
		db = m.cluster.cpuTime(tb) - m.db
	}
	return self, db
}
