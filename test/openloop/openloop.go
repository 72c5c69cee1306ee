// Package openloop drives a benchmark's requests at a fixed rate whatever
// the server's latency, and reports latency from each request's scheduled
// instant (see Loop).
package openloop

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Loop sends requests at a fixed rate whatever the server's latency
// (an open loop, as a fleet of agents renewing on their own schedules
// does), and measures each request's latency from the instant it was
// scheduled to be sent, not from when it was sent: a sender that falls
// behind (all workers busy, or starved of CPU) would otherwise hide the
// queue it builds ("coordinated omission"). Request i is scheduled at
// start + i/Rate.
type Loop struct {
	// Rate is requests per second. Required.
	Rate int
	// Workers bounds the requests in flight; a request whose turn comes
	// while all are busy waits for one, and the wait counts in its latency
	// and in the sender's lag. Zero means 1,024.
	Workers int
}

// Result holds the latencies of one run, each from the request's
// scheduled instant to its completion, and how late the sender handed each
// request to a worker.
type Result struct {
	Latency []time.Duration
	// Lag is, per request, the time from its scheduled instant until a
	// worker took it: zero for a sender that keeps up.
	Lag []time.Duration
	// Start is the first request's scheduled instant; request i's is
	// Start + i/Rate.
	Start time.Time
	// Elapsed runs from the first scheduled instant to the last completion.
	Elapsed time.Duration
}

// Run sends n requests, calling do(i) for request i on one of the workers.
func (o Loop) Run(n int, do func(i int)) Result {
	workers := o.Workers
	if workers == 0 {
		workers = 1024
	}
	interval := time.Second / time.Duration(o.Rate)
	res := Result{Latency: make([]time.Duration, n), Lag: make([]time.Duration, n)}
	type job struct {
		i     int
		sched time.Time
	}
	jobs := make(chan job) // unbuffered: a send completes when a worker takes it
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for j := range jobs {
				do(j.i)
				res.Latency[j.i] = time.Since(j.sched)
			}
		})
	}
	start := time.Now()
	res.Start = start
	for i := range n {
		sched := start.Add(time.Duration(i) * interval)
		if d := time.Until(sched); d > 0 {
			time.Sleep(d)
		}
		jobs <- job{i: i, sched: sched}
		res.Lag[i] = time.Since(sched)
	}
	close(jobs)
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

// Quantile returns the q-quantile (0 ≤ q < 1) of ds, sorting ds.
func Quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	return ds[int(float64(len(ds))*q)]
}

// Report adds the run's figures to b: latency p50, p99 and max from the
// scheduled instants, the sender's lag (p99, max) and the rate it achieved.
// A sender more than one interval late at p99 did not hold the rate; the
// latencies still count the wait, and the benchmark says so.
func (r Result) Report(b *testing.B, rate int) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	lat := slices.Clone(r.Latency)
	b.ReportMetric(ms(Quantile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(Quantile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	lag := slices.Clone(r.Lag)
	lagP99 := Quantile(lag, 0.99)
	b.ReportMetric(ms(lagP99), "sender-lag-p99-ms")
	b.ReportMetric(ms(lag[len(lag)-1]), "sender-lag-max-ms")
	b.ReportMetric(float64(len(lat))/r.Elapsed.Seconds(), "req/s")
	if lagP99 > time.Second/time.Duration(rate) {
		b.Logf("the sender lagged: p99 %v, max %v behind schedule at %d/s (latencies count from the schedule)",
			lagP99, lag[len(lag)-1], rate)
	}
}
