package e2e

import (
	"sync/atomic"
	"testing"

	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/test/openloop"
)

// BenchmarkIssuanceLatency1000Dev sends b.N requests at a fixed 1,000 per
// second (open loop, openloop.Loop) to `meshca dev` in its own process and
// reports p50, p99 and max latency from each request's scheduled instant,
// the rate achieved and the server's CPU time per request. The issuer
// package's BenchmarkIssuanceLatency1000 runs the same load with the
// server in the benchmark's process; here the two can be kept apart, e.g.
// the server on one core and the load generator on the other:
//
//	printf '#!/bin/sh\nexec taskset -c 0 %s "$@"\n' "$PWD/meshca" >meshca-cpu0
//	MESHCA_BIN=$PWD/meshca-cpu0 taskset -c 1 ./e2e.test -test.bench IssuanceLatency1000Dev ...
func BenchmarkIssuanceLatency1000Dev(b *testing.B) { benchDevLatency(b, devOptions{}) }

// BenchmarkIssuanceLatency1000DevPostgres is BenchmarkIssuanceLatency1000Dev
// with `meshca dev --store-dsn` on a new PostgreSQL database.
func BenchmarkIssuanceLatency1000DevPostgres(b *testing.B) {
	benchDevLatency(b, devOptions{Args: []string{"--store-dsn", pgtest.NewDatabase(b)}})
}

func benchDevLatency(b *testing.B, opts devOptions) {
	whole := newWholePath(b, benchCSRs(b), opts)
	var failed atomic.Int64
	b.ResetTimer()
	cpu0 := processCPU(b, whole.pid)
	res := openloop.Loop{Rate: 1000}.Run(b.N, func(i int) {
		if err := whole.issue(int64(i)); err != nil && failed.Add(1) == 1 {
			b.Error(err)
		}
	})
	cpu := processCPU(b, whole.pid) - cpu0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
	res.Report(b, 1000)
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "server-cpu-us/op")
}
