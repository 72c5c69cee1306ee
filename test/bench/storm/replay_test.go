package storm

import (
	"context"
	"crypto"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/agent"
	"github.com/meshca/meshca/rotation"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// replayConfig says how a simulated arrival curve is replayed.
type replayConfig struct {
	// Sample replays one workload in Sample, chosen uniformly (seeded).
	Sample int
	// Compress divides every simulated time (arrivals, retry delays) by
	// Compress. With Sample == Compress the issuer sees the fleet's own
	// request rate.
	Compress int
	// Clients is the number of agent connections the requests share.
	Clients int
}

// attempt is one replayed request.
type attempt struct {
	workload int
	// start and end are real times since the replay began.
	start, end time.Duration
	ok         bool
	code       string // gRPC code of a failure
}

// replayResult is what a replay measured.
type replayResult struct {
	attempts []attempt
	// plan holds the sampled workloads' simulated first requests, moved to
	// start at zero: the first one's At went to offset.
	plan   []Request
	offset time.Duration
	// done is, per sampled workload, its success in fleet time since the
	// root change: its simulated arrival plus the real time it then took
	// (retry delays scaled back up by Compress).
	done map[int]time.Duration
}

// samplePlan picks one workload in sample from sim (uniformly, with seed)
// and returns their first requests in order of At.
func samplePlan(sim Result, sample int, seed uint64) []Request {
	n := len(sim.Renewed)
	perm := rand.New(rand.NewPCG(seed, ^seed)).Perm(n)[:n/sample]
	first := make(map[int]Request, len(perm))
	for _, r := range sim.Requests {
		if _, ok := first[r.Workload]; !ok && r.Attempt == 1 {
			first[r.Workload] = r
		}
	}
	plan := make([]Request, 0, len(perm))
	for _, w := range perm {
		plan = append(plan, first[w])
	}
	sort.Slice(plan, func(i, j int) bool {
		return plan[i].At < plan[j].At || plan[i].At == plan[j].At && plan[i].Workload < plan[j].Workload
	})
	return plan
}

// maxAttempts bounds a replayed workload's attempts, so that a replay
// against a broken issuer ends.
const maxAttempts = 20

// replay sends plan's requests to s at their simulated times divided by
// cfg.Compress, each workload retrying as the rotation loop would
// (rotation.RetryDelay, compressed; each attempt bounded by the loop's 30 s
// attempt timeout, not compressed: the issuer's latency is real).
func replay(tb testing.TB, s *issuerUnderTest, plan []Request, cfg replayConfig) replayResult {
	tb.Helper()
	clients := s.clients(tb, cfg.Clients)
	workloads := make([]int, len(plan))
	for i, r := range plan {
		workloads[i] = r.Workload
	}
	tokens := s.tokensFor(tb, workloads)
	offset := plan[0].At
	res := replayResult{plan: slices.Clone(plan), offset: offset, done: make(map[int]time.Duration, len(plan))}
	for i := range res.plan {
		res.plan[i].At -= offset
	}
	// Warm every connection up so that no TLS handshake lands in the curve.
	for _, c := range clients {
		if _, err := c.Fetch(tb.Context(), mustKey(tb), tokens[workloads[0]], time.Hour); err != nil {
			tb.Fatalf("warm-up: %v", err)
		}
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	c := time.Duration(cfg.Compress)
	began := time.Now()
	for i, r := range res.plan {
		time.Sleep(time.Until(began.Add(r.At / c)))
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r.Workload), 1))
			client := clients[i%len(clients)]
			for failures := 0; ; {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				start := time.Since(began)
				key, err := agent.GenerateKey(agent.KeyECP256)
				if err == nil {
					_, err = client.Fetch(ctx, key, tokens[r.Workload], time.Hour)
				}
				cancel()
				a := attempt{workload: r.Workload, start: start, end: time.Since(began), ok: err == nil}
				if err != nil {
					a.code = status.Code(err).String()
				}
				mu.Lock()
				res.attempts = append(res.attempts, a)
				if err == nil {
					took := a.end - r.At/c
					if failures > 0 {
						took *= c
					}
					res.done[r.Workload] = offset + r.At + took
				}
				mu.Unlock()
				if err == nil {
					return
				}
				if failures++; failures == maxAttempts {
					return // counted as not renewed
				}
				delay, _ := rotation.RetryDelay(err, failures, rng.Float64(), rotation.Config{})
				time.Sleep(delay / c)
			}
		})
	}
	wg.Wait()
	slices.SortFunc(res.attempts, func(a, b attempt) int { return int(a.start - b.start) })
	return res
}

// mustKey generates a fresh P-256 key, as the agent does for every renewal.
func mustKey(tb testing.TB) crypto.Signer {
	k, err := agent.GenerateKey(agent.KeyECP256)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}
