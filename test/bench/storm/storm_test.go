package storm

import (
	"slices"
	"testing"
	"time"
)

// checkRenewedOnce checks that every workload of res succeeded exactly
// once, as its last attempt, and that the arrival curve counts every
// attempt.
func checkRenewedOnce(t *testing.T, res Result, workloads int) {
	t.Helper()
	ok := make([]int, workloads)
	last := make([]time.Duration, workloads)
	for i, r := range res.Requests {
		if i > 0 && r.At < res.Requests[i-1].At {
			t.Fatalf("request %d at %v comes after one at %v", i, r.At, res.Requests[i-1].At)
		}
		if r.OK {
			ok[r.Workload]++
		}
		last[r.Workload] = r.At
	}
	for w, n := range ok {
		if n != 1 {
			t.Fatalf("workload %d renewed %d times, want 1", w, n)
		}
		if res.Renewed[w] != last[w] {
			t.Fatalf("workload %d renewed at %v but attempted again at %v", w, res.Renewed[w], last[w])
		}
	}
	sum := 0
	for _, c := range res.Arrivals {
		sum += c
	}
	if sum != len(res.Requests) {
		t.Fatalf("arrival curve sums to %d, want %d attempts", sum, len(res.Requests))
	}
}

// Today's schedule spreads a fleet whose certificates were all issued at
// the root change over [40%, 60%] of their life, each workload once.
func TestScheduledFleetRenewsOnceInItsWindow(t *testing.T) {
	const n = 20_000
	res, err := Simulate(Config{Workloads: n, TTL: time.Hour, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkRenewedOnce(t, res, n)
	if len(res.Requests) != n {
		t.Fatalf("%d attempts without a capacity limit, want %d", len(res.Requests), n)
	}
	w := SpreadingWindow(res.Arrivals)
	if w.First != 24*60 || w.Last != 36*60-1 {
		t.Fatalf("spreading window = seconds [%d, %d], want [1440, 2159] (40%%..60%% of an hour)", w.First, w.Last)
	}
	// 20,000 uniform over 720 s: mean 27.8 a second; a Poisson-like peak
	// stays under twice that, a schedule that bunched up would not.
	if r := w.PeakToMean(); r < 1 || r > 2 {
		t.Fatalf("peak-to-mean %.2f, want within [1, 2]", r)
	}
}

// The same seed gives the same curve; another seed another one.
func TestSimulateIsDeterministic(t *testing.T) {
	a, _ := Simulate(Config{Workloads: 2_000, Seed: 7})
	b, _ := Simulate(Config{Workloads: 2_000, Seed: 7})
	c, _ := Simulate(Config{Workloads: 2_000, Seed: 8})
	if !slices.Equal(a.Arrivals, b.Arrivals) || !slices.Equal(a.Renewed, b.Renewed) {
		t.Fatal("two runs with one seed differ")
	}
	if slices.Equal(a.Renewed, c.Renewed) {
		t.Fatal("two seeds gave the same schedule")
	}
}

// Over the issuer's capacity, requests fail and the agents back off with
// rotation.RetryDelay: every workload still renews exactly once, and no
// second holds more successes than the capacity.
func TestAtOnceOverCapacityRetriesWithBackoff(t *testing.T) {
	const n, capacity = 5_000, 400
	res, err := Simulate(Config{Workloads: n, Policy: AtOnce, Seed: 3, Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	checkRenewedOnce(t, res, n)
	first := 0
	for _, r := range res.Requests {
		if r.Attempt == 1 && r.At == 0 {
			first++
		}
	}
	if first != n {
		t.Fatalf("%d first attempts at the change, want all %d workloads", first, n)
	}
	perSecond := map[int]int{}
	for _, r := range res.Requests {
		if r.OK {
			perSecond[int(r.At/time.Second)]++
		}
	}
	for sec, c := range perSecond {
		if c > capacity {
			t.Fatalf("second %d completed %d, over the capacity %d", sec, c, capacity)
		}
	}
	if len(res.Requests) <= n {
		t.Fatalf("%d attempts, want retries beyond %d", len(res.Requests), n)
	}
	if done := slices.Max(res.Renewed); done < time.Duration(n/capacity-1)*time.Second {
		t.Fatalf("all renewed by %v, faster than the capacity allows", done)
	}
}

func TestSpreadingWindow(t *testing.T) {
	for _, tc := range []struct {
		name        string
		counts      []int
		first, last int
		peak        int
		ratio       float64
	}{
		{"flat", []int{5, 5, 5, 5}, 0, 3, 5, 1},
		{"leading and trailing zeros excluded", []int{0, 0, 2, 6, 4, 0}, 2, 4, 6, 1.5},
		{"zeros inside count", []int{8, 0, 0, 0}, 0, 0, 8, 1},
		{"gap inside", []int{4, 0, 0, 4}, 0, 3, 4, 2},
		{"empty", []int{0, 0}, -1, -2, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := SpreadingWindow(tc.counts)
			if w.First != tc.first || w.Last != tc.last || w.Peak != tc.peak || w.PeakToMean() != tc.ratio {
				t.Fatalf("SpreadingWindow(%v) = %+v, ratio %v; want [%d, %d] peak %d ratio %v",
					tc.counts, w, w.PeakToMean(), tc.first, tc.last, tc.peak, tc.ratio)
			}
		})
	}
}

func TestBuckets(t *testing.T) {
	reqs := []Request{{At: 0}, {At: 999 * time.Millisecond}, {At: time.Second}, {At: 3500 * time.Millisecond}}
	if got, want := Buckets(reqs, time.Second), []int{2, 1, 0, 1}; !slices.Equal(got, want) {
		t.Fatalf("Buckets = %v, want %v", got, want)
	}
	if got := Buckets(nil, time.Second); got != nil {
		t.Fatalf("Buckets(nil) = %v", got)
	}
}

func TestSimulateRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Workloads: -1}, {Workloads: 1, TTL: -time.Second}, {Workloads: 1, Capacity: -1}} {
		if _, err := Simulate(cfg); err == nil {
			t.Errorf("Simulate(%+v) succeeded", cfg)
		}
	}
}

// The replay path works end to end: a small fleet's curve, sampled and
// compressed, replayed against an issuer on PostgreSQL, leaves every
// sampled workload with a certificate verified under the issuer's root,
// without a failed request.
func TestReplayRenewsEveryWorkload(t *testing.T) {
	s := startIssuer(t)
	sim, err := Simulate(Config{Workloads: 2_000, TTL: 10 * time.Minute, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	plan := samplePlan(sim, 10, 5)
	if len(plan) != 200 {
		t.Fatalf("sampled %d workloads, want 200", len(plan))
	}
	res := replay(t, s, plan, replayConfig{Sample: 10, Compress: 60, Clients: 4})
	if len(res.done) != len(plan) {
		t.Fatalf("%d of %d workloads renewed", len(res.done), len(plan))
	}
	for _, a := range res.attempts {
		if !a.ok {
			t.Errorf("workload %d failed: %s", a.workload, a.code)
		}
	}
	if len(res.attempts) != len(plan) {
		t.Fatalf("%d attempts for %d workloads", len(res.attempts), len(plan))
	}
	// Each success lands no earlier than its workload's simulated time.
	for _, r := range sim.Requests {
		if d, ok := res.done[r.Workload]; ok && d < r.At {
			t.Fatalf("workload %d renewed at %v, before it asked at %v", r.Workload, d, r.At)
		}
	}
}
