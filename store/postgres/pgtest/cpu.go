package pgtest

import (
	"syscall"
	"testing"
	"time"
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
	m := &CPUMeter{cluster: c, self: processCPU(tb)}
	if c != nil {
		m.db = c.CPUTime(tb)
	}
	return m
}

// Stop returns the CPU time used since StartCPUMeter by this process and by
// the cluster (zero without one).
func (m *CPUMeter) Stop(tb testing.TB) (self, db time.Duration) {
	tb.Helper()
	self = processCPU(tb) - m.self
	if m.cluster != nil {
		db = m.cluster.CPUTime(tb) - m.db
	}
	return self, db
}

func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
