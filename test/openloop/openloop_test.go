package openloop

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestOpenLoopCountsTheQueue runs the open loop against a server that takes
// 2 ms per request and serves one at a time, at 1,000 requests/s: the
// server falls behind by 1 ms per request, so request i completes at
// (i+1)·2 ms and its latency from its schedule (i ms) is i+2 ms, although
// each call took 2 ms. A loop that timed the calls would report 2 ms.
func TestOpenLoopCountsTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		calls := 0
		res := Loop{Rate: 1000, Workers: 1}.Run(100, func(int) {
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
		res := Loop{Rate: 1000}.Run(50, func(int) { time.Sleep(30 * time.Millisecond) })
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
