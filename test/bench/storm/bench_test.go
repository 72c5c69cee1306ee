package storm

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// stormWorkloads is the simulated fleet.
const stormWorkloads = 100_000

// envInt reads a positive integer from the environment, def when unset.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkRenewalStorm simulates 100,000 agents after a root change (see
// Policy) and replays their requests, sampled and time-compressed, against
// an issuer on PostgreSQL over gRPC and TLS. MESHCA_STORM_SAMPLE (default
// 10: one workload in 10) and MESHCA_STORM_COMPRESS (default 10: ten
// simulated seconds in one) set the replay. Run it once:
//
//	go test -run '^$' -bench RenewalStorm -benchtime 1x ./test/bench/storm/
func BenchmarkRenewalStorm(b *testing.B) {
	cfg := replayConfig{
		Sample:   envInt(b, "MESHCA_STORM_SAMPLE", 10),
		Compress: envInt(b, "MESHCA_STORM_COMPRESS", 10),
		Clients:  64,
	}
	for _, policy := range []Policy{Scheduled, AtOnce} {
		b.Run(policy.String(), func(b *testing.B) {
			sim, err := Simulate(Config{Workloads: stormWorkloads, Policy: policy, Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			simW := SpreadingWindow(sim.Arrivals)
			s := startIssuer(b)
			plan := samplePlan(sim, cfg.Sample, 2)
			var res replayResult
			for b.Loop() {
				res = replay(b, s, plan, cfg)
			}
			reportStorm(b, policy, cfg, simW, res)
		})
	}
}

// reportStorm reports the simulated curve (per simulated second), the
// replayed one and what the issuer achieved (per real second: with Sample ==
// Compress, one real second of the sample has the statistics of one second
// of the fleet).
func reportStorm(b *testing.B, policy Policy, cfg replayConfig, simW Window, res replayResult) {
	c := time.Duration(cfg.Compress)
	real := make([]Request, len(res.plan))
	for i, r := range res.plan {
		real[i] = Request{At: r.At / c}
	}
	offered := SpreadingWindow(Buckets(real, time.Second))
	var (
		done   []Request
		errors int
		lat    []time.Duration
		codes  = map[string]int{}
	)
	for _, a := range res.attempts {
		if !a.ok {
			errors++
			codes[a.code]++
			continue
		}
		done = append(done, Request{At: a.end})
		lat = append(lat, a.end-a.start)
	}
	achieved := SpreadingWindow(Buckets(done, time.Second))
	slices.Sort(lat)
	if len(res.done) != len(res.plan) {
		b.Errorf("%d of %d replayed workloads hold a certificate under the new root", len(res.done), len(res.plan))
	}
	last := slices.MaxFunc(res.attempts, func(x, y attempt) int { return int(x.end - y.end) }).end
	b.ReportMetric(float64(errors), "errors")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(last.Seconds(), "replay-s")
	b.ReportMetric(achieved.Mean, "issuer-mean-req/s")
	b.ReportMetric(float64(achieved.Peak), "issuer-peak-req/s")
	b.Logf("fleet %d, replayed %d (1 in %d, uniform), simulated time / %d, %d connections; first replayed request %v after the change",
		stormWorkloads, len(res.plan), cfg.Sample, cfg.Compress, cfg.Clients, res.offset)
	b.Logf("simulated fleet: window %d s from %d s, mean %.1f/s, peak %d/s, peak/mean %.3f",
		simW.Len(), simW.First, simW.Mean, simW.Peak, simW.PeakToMean())
	b.Logf("replayed requests: window %d real s, mean %.1f/s, peak %d/s, peak/mean %.3f",
		offered.Len(), offered.Mean, offered.Peak, offered.PeakToMean())
	b.Logf("issuer completions: window %d real s, mean %.1f/s, peak %d/s, peak/mean %.3f; %d errors; latency p50 %v p99 %v",
		achieved.Len(), achieved.Mean, achieved.Peak, achieved.PeakToMean(), errors, lat[len(lat)/2], lat[len(lat)*99/100])
	if errors > 0 {
		b.Logf("failed attempts by gRPC code: %v", codes)
	}
	if policy == AtOnce {
		return // one burst: no spreading window, and the sample is a burst Sample times smaller than the fleet's
	}
	var all time.Duration
	for _, d := range res.done {
		all = max(all, d)
	}
	b.ReportMetric(simW.PeakToMean(), "sim-peak/mean")
	b.ReportMetric(float64(simW.Len()), "sim-window-s")
	b.ReportMetric(simW.Mean, "sim-mean-req/s")
	b.ReportMetric(offered.PeakToMean(), "replayed-peak/mean")
	b.ReportMetric(achieved.PeakToMean(), "issuer-peak/mean")
	b.ReportMetric(all.Seconds(), "s-to-all-renewed")
}
