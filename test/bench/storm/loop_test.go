package storm

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/rotation"
)

// scriptedRenewer is a workload's Renewer: its first call is the
// certificate obtained at the root change; each later call records when it
// came and fails when the simulation says that attempt failed.
type scriptedRenewer struct {
	change time.Time
	ttl    time.Duration
	want   []Request // the simulation's attempts of this workload
	calls  int
	at     []time.Duration // when each renewal attempt came, since change
}

var _ rotation.Renewer = (*scriptedRenewer)(nil)

func (r *scriptedRenewer) Renew(context.Context) (rotation.Validity, error) {
	now := time.Now()
	r.calls++
	if r.calls > 1 {
		attempt := r.calls - 2
		r.at = append(r.at, now.Sub(r.change))
		if attempt < len(r.want) && !r.want[attempt].OK {
			return rotation.Validity{}, errUnavailable
		}
	}
	return rotation.Validity{NotBefore: now, NotAfter: now.Add(r.ttl)}, nil
}

// The simulation is what real rotation loops do: in a synctest bubble, one
// rotation.Loop per workload, each with that workload's jitter source,
// obtains its certificate at the change, then renews and retries at exactly
// the simulated times (failures where the simulated issuer was over its
// capacity).
func TestSimulationMatchesRotationLoops(t *testing.T) {
	const n = 300
	cfg := Config{Workloads: n, TTL: time.Hour, Seed: 9, Capacity: 1}
	sim, err := Simulate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]Request, n)
	failed := 0
	for _, r := range sim.Requests {
		want[r.Workload] = append(want[r.Workload], r)
		if !r.OK {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("the simulation has no failed attempt: the retry path is not compared")
	}
	synctest.Test(t, func(t *testing.T) {
		change := time.Now()
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		renewers := make([]*scriptedRenewer, n)
		for w := range n {
			renewers[w] = &scriptedRenewer{change: change, ttl: cfg.TTL, want: want[w]}
			loop, err := rotation.New(rotation.Config{Renewer: renewers[w], Jitter: jitterSource(cfg.Seed, w).Float64, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() { _ = loop.Run(ctx) })
		}
		// The next renewals come at 40% of the life after the last one.
		time.Sleep(slices.Max(sim.Renewed) + time.Second)
		cancel()
		wg.Wait()
		for w, r := range renewers {
			var times []time.Duration
			for _, a := range want[w] {
				times = append(times, a.At)
			}
			if !slices.Equal(r.at, times) {
				t.Fatalf("workload %d: the loop renewed at %v, the simulation at %v", w, r.at, times)
			}
		}
	})
}
