// Package benchcpu reports a benchmark's CPU time per operation. Machines
// here are shared and noisy: wall time per operation moves with whatever
// else runs, CPU time per operation far less, so ratios of it are the
// robust figure (docs/benchmarks.md).
package benchcpu

import (
	"syscall"
	"testing"
	"time"
)

// Start begins measuring this process's CPU time (user + system, all
// threads) and returns a func that reports it per operation of b as
// "cpu-us/op".
func Start(b *testing.B) func() {
	start := Process(b)
	return func() {
		b.ReportMetric(float64((Process(b)-start).Microseconds())/float64(b.N), "cpu-us/op")
	}
}

// Process returns the CPU time this process has used so far.
func Process(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
