// Package storm simulates the renewal requests a fleet of agents sends an
// issuer after a root change, in fake time, with the agents' own schedule
// decisions (rotation.RenewAt for the renewal point, rotation.RetryDelay
// after a failure), and replays the result against a real issuer
// (BenchmarkRenewalStorm). The simulation is a pure event simulation: it
// calls the decision functions the rotation loop calls, with the jitter the
// loop would draw, from one seeded source per workload.
package storm

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/meshca/meshca/rotation"
)

// Policy says when each workload's certificate becomes due after the root
// change.
type Policy int

const (
	// Scheduled is what the agent does: a root change makes no certificate
	// due (agent/manager.go SetTrustBundle serves the new roots and keeps the
	// certificate); each workload moves to the new root at its next
	// scheduled renewal, rotation.RenewAt of the certificate it holds. The
	// worst case simulated is a fleet whose certificates were all issued at
	// the instant of the change, so that every one becomes due in the same
	// renewal window.
	Scheduled Policy = iota
	// AtOnce makes every certificate due at the change, as an agent that
	// renewed on every root change without spreading would (the rotation
	// loop's RenewNow path, which the agent takes only for a revoked
	// certificate). It is the contrast to Scheduled.
	AtOnce
)

func (p Policy) String() string {
	switch p {
	case Scheduled:
		return "scheduled"
	case AtOnce:
		return "at-once"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Config configures a simulation.
type Config struct {
	// Workloads is the fleet size. Required (> 0).
	Workloads int
	// TTL is the lifetime of every certificate; zero means one hour (the
	// issuer's default leaf TTL).
	TTL time.Duration
	// Policy decides when certificates become due; the zero value is
	// Scheduled.
	Policy Policy
	// Seed seeds the jitter; a simulation is a function of its Config.
	Seed uint64
	// Capacity is how many requests the issuer completes in one second of
	// simulated time; the others fail (as Unavailable) and the agent
	// retries after rotation.RetryDelay. Zero means unlimited.
	Capacity int
}

// Request is one renewal attempt.
type Request struct {
	// Workload is the workload's index in [0, Workloads).
	Workload int
	// At is when the request reaches the issuer, from the root change.
	At time.Duration
	// Attempt counts the workload's attempts, from 1.
	Attempt int
	// OK reports whether the simulated issuer completed it.
	OK bool
}

// Result is what a simulation produced.
type Result struct {
	// Requests holds every attempt in the order of At.
	Requests []Request
	// Arrivals counts the attempts per second since the root change.
	Arrivals []int
	// Renewed is, per workload, when its renewal succeeded: from then on it
	// holds a certificate under the new root.
	Renewed []time.Duration
}

// errUnavailable is the simulated issuer's failure over its capacity.
var errUnavailable = errors.New("issuer unavailable")

// Simulate runs the simulation cfg describes. The root change happens at
// zero; from then on the issuer signs under the new root only.
func Simulate(cfg Config) (Result, error) {
	if cfg.Workloads <= 0 || cfg.TTL < 0 || cfg.Capacity < 0 {
		return Result{}, fmt.Errorf("storm: invalid config %+v", cfg)
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	change := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q := make(attempts, 0, cfg.Workloads)
	jitter := make([]*rand.Rand, cfg.Workloads)
	for w := range cfg.Workloads {
		jitter[w] = jitterSource(cfg.Seed, w)
		due := change
		if cfg.Policy == Scheduled {
			due = rotation.RenewAt(change, rotation.Validity{NotBefore: change, NotAfter: change.Add(ttl)}, jitter[w].Float64())
		}
		q = append(q, Request{Workload: w, At: due.Sub(change), Attempt: 1})
	}
	heap.Init(&q)
	res := Result{Renewed: make([]time.Duration, cfg.Workloads)}
	served := map[int]int{} // completed requests per second
	for q.Len() > 0 {
		r := heap.Pop(&q).(Request)
		sec := int(r.At / time.Second)
		r.OK = cfg.Capacity == 0 || served[sec] < cfg.Capacity
		res.Requests = append(res.Requests, r)
		if r.OK {
			served[sec]++
			res.Renewed[r.Workload] = r.At
			continue
		}
		delay, _ := rotation.RetryDelay(errUnavailable, r.Attempt, jitter[r.Workload].Float64(), rotation.Config{})
		heap.Push(&q, Request{Workload: r.Workload, At: r.At + delay, Attempt: r.Attempt + 1})
	}
	res.Arrivals = Buckets(res.Requests, time.Second)
	return res, nil
}

// jitterSource is the jitter of one workload's rotation loop
// (rotation.Config.Jitter): its draws go, in order, to RenewAt after each
// renewal and to RetryDelay after each failure, as the loop's do.
func jitterSource(seed uint64, workload int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(workload)))
}

// Buckets counts requests per width-long interval from zero, up to the
// last request's.
func Buckets(reqs []Request, width time.Duration) []int {
	if len(reqs) == 0 {
		return nil
	}
	last := slices.MaxFunc(reqs, func(a, b Request) int { return int(a.At - b.At) })
	out := make([]int, int(last.At/width)+1)
	for _, r := range reqs {
		out[int(r.At/width)]++
	}
	return out
}

// Window is the spreading window of a curve of counts per bucket: from its
// first non-zero bucket to its last, inclusive.
type Window struct {
	// First and Last index the buckets; Last < First when all are zero.
	First, Last int
	// Peak is the largest count, Mean the total over the window's length.
	Peak int
	Mean float64
}

// Len is the number of buckets in w.
func (w Window) Len() int { return max(w.Last-w.First+1, 0) }

// PeakToMean is Peak / Mean, 0 for an empty window.
func (w Window) PeakToMean() float64 {
	if w.Mean == 0 {
		return 0
	}
	return float64(w.Peak) / w.Mean
}

// SpreadingWindow returns the window of counts.
func SpreadingWindow(counts []int) Window {
	w := Window{First: -1, Last: -2}
	total := 0
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if w.First < 0 {
			w.First = i
		}
		w.Last = i
		w.Peak = max(w.Peak, c)
		total += c
	}
	if w.Len() > 0 {
		w.Mean = float64(total) / float64(w.Len())
	}
	return w
}

// attempts is a min-heap of requests by At, then workload, so that equal
// times pop in a fixed order.
type attempts []Request

func (a attempts) Len() int { return len(a) }
func (a attempts) Less(i, j int) bool {
	if a[i].At != a[j].At {
		return a[i].At < a[j].At
	}
	return a[i].Workload < a[j].Workload
}
func (a attempts) Swap(i, j int) { a[i], a[j] = a[j], a[i] }
func (a *attempts) Push(x any)   { *a = append(*a, x.(Request)) }
func (a *attempts) Pop() any {
	old := *a
	r := old[len(old)-1]
	*a = old[:len(old)-1]
	return r
}
