package issuer_test

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// openLoop sends requests at a fixed rate whatever the server's latency
// (an open loop, as a fleet of agents renewing on their own schedules
// does), and measures each request's latency from the instant it was
// scheduled to be sent, not from when it was sent: a sender that falls
// behind (all workers busy, or starved of CPU) would otherwise hide the
// queue it builds ("coordinated omission"). Request i is scheduled at
// start + i/Rate.
type openLoop struct {
	// Rate is requests per second. Required.
	Rate int
	// Workers bounds the requests in flight; a request whose turn comes
	// while all are busy waits for one, and the wait counts in its latency
	// and in the sender's lag. Zero means 1,024.
	Workers int
}

// openLoopResult holds the latencies of one run, each from the request's
// scheduled instant to its completion, and how late the sender handed each
// request to a worker.
type openLoopResult struct {
	Latency []time.Duration
	// Lag is, per request, the time from its scheduled instant until a
	// worker took it: zero for a sender that keeps up.
	Lag []time.Duration
	// Elapsed runs from the first scheduled instant to the last completion.
	Elapsed time.Duration
}

// run sends n requests, calling do(i) for request i on one of the workers.
func (o openLoop) run(n int, do func(i int)) openLoopResult {
	workers := o.Workers
	if workers == 0 {
		workers = 1024
	}
	interval := time.Second / time.Duration(o.Rate)
	res := openLoopResult{Latency: make([]time.Duration, n), Lag: make([]time.Duration, n)}
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

// quantile returns the q-quantile (0 ≤ q < 1) of ds, sorting ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	return ds[int(float64(len(ds))*q)]
}

// report adds the run's figures to b: latency p50, p99 and max from the
// scheduled instants, the sender's lag (p99, max) and the rate it achieved.
// A sender more than one interval late at p99 did not hold the rate; the
// latencies still count the wait, and the benchmark says so.
func (r openLoopResult) report(b *testing.B, rate int) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	lat := slices.Clone(r.Latency)
	b.ReportMetric(ms(quantile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(quantile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	lag := slices.Clone(r.Lag)
	lagP99 := quantile(lag, 0.99)
	b.ReportMetric(ms(lagP99), "sender-lag-p99-ms")
	b.ReportMetric(ms(lag[len(lag)-1]), "sender-lag-max-ms")
	b.ReportMetric(float64(len(lat))/r.Elapsed.Seconds(), "req/s")
	if lagP99 > time.Second/time.Duration(rate) {
		b.Logf("the sender lagged: p99 %v, max %v behind schedule at %d/s (latencies count from the schedule)",
			lagP99, lag[len(lag)-1], rate)
	}
}

// TestOpenLoopCountsTheQueue runs the open loop against a server that takes
// 2 ms per request and serves one at a time, at 1,000 requests/s: the
// server falls behind by 1 ms per request, so request i completes at
// (i+1)·2 ms and its latency from its schedule (i ms) is i+2 ms, although
// each call took 2 ms. A loop that timed the calls would report 2 ms.
func TestOpenLoopCountsTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		calls := 0
		res := openLoop{Rate: 1000, Workers: 1}.run(100, func(int) {
			mu.Lock()
			calls++
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		})
		if calls != 100 {
			t.Fatalf("%d calls, want 100 (an open loop drops none)", calls)
		}
		for i, got := range res.Latency {
			if want := time.Duration(i+2) * time.Millisecond; got != want {
				t.Fatalf("request %d: latency %v, want %v from its scheduled instant", i, got, want)
			}
		}
		// Request i waits for the worker until i·2 ms: i ms behind.
		for i, got := range res.Lag {
			if want := time.Duration(i) * time.Millisecond; got != want {
				t.Fatalf("request %d: sender lag %v, want %v", i, got, want)
			}
		}
		if want := 200 * time.Millisecond; res.Elapsed != want {
			t.Errorf("elapsed %v, want %v", res.Elapsed, want)
		}
	})
}

// TestOpenLoopKeepsTheRate: with enough workers, a slow server does not slow
// the sender: every request leaves on schedule and its latency is the
// server's.
func TestOpenLoopKeepsTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := openLoop{Rate: 1000}.run(50, func(int) { time.Sleep(30 * time.Millisecond) })
		for i := range res.Latency {
			if res.Latency[i] != 30*time.Millisecond || res.Lag[i] != 0 {
				t.Fatalf("request %d: latency %v, lag %v; want 30ms, 0", i, res.Latency[i], res.Lag[i])
			}
		}
		if want := 49*time.Millisecond + 30*time.Millisecond; res.Elapsed != want {
			t.Errorf("elapsed %v, want %v", res.Elapsed, want)
		}
	})
}
