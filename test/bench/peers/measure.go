package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// issueFunc issues one certificate for the client's CSR over the client's
// own connection. It returns an error unless a certificate came back.
type issueFunc func(ctx context.Context) error

// system is one certificate issuer under test.
type system struct {
	name string
	// does says what the server does per request, for the report.
	does string
	// clients holds one issueFunc per concurrent client, each bound to its
	// own persistent connection and CSR.
	clients []issueFunc
	// pids returns the processes whose CPU time is the server's.
	pids func(ctx context.Context) ([]int, error)

	rounds    []roundResult
	latencies []time.Duration
}

type roundResult struct {
	ops  int
	wall time.Duration
	cpu  time.Duration
	// procs is how many processes' CPU time was counted.
	procs int
}

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procCPU returns the user + system CPU time of process pid so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from the text of
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last closing parenthesis.
func parseStatCPU(stat string) (time.Duration, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := strings.Fields(stat[end+1:])
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// cpuOf sums the CPU time of pids. A process that has gone away counts as
// zero: PostgreSQL backends may end between two reads.
func cpuOf(pids []int) map[int]time.Duration {
	m := make(map[int]time.Duration, len(pids))
	for _, p := range pids {
		if d, err := procCPU(p); err == nil {
			m[p] = d
		}
	}
	return m
}

// cpuDelta is the CPU the processes in after used since before; a process
// first seen in after counts from zero.
func cpuDelta(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for p, a := range after {
		d += a - before[p]
	}
	return d
}

// run issues ops certificates with every client of s working at once and
// records the round's wall time, the server's CPU time and each request's
// latency.
func (s *system) run(ctx context.Context, ops int) error {
	pids, err := s.pids(ctx)
	if err != nil {
		return err
	}
	lat := make([]time.Duration, ops)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(s.clients))
	before, start := cpuOf(pids), time.Now()
	for _, issue := range s.clients {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(ops); i = next.Add(1) - 1 {
				t0 := time.Now()
				if err := issue(ctx); err != nil {
					errs <- fmt.Errorf("%s: %w", s.name, err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	after := cpuOf(pids)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	s.rounds = append(s.rounds, roundResult{ops: ops, wall: wall, cpu: cpuDelta(before, after), procs: len(after)})
	s.latencies = append(s.latencies, lat...)
	return nil
}

// warmUp has every client issue n certificates: connections, TLS sessions,
// caches and database files are warm before the first measured round.
func (s *system) warmUp(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(s.clients))
	for _, issue := range s.clients {
		wg.Go(func() {
			for range n {
				if err := issue(ctx); err != nil {
					errs <- fmt.Errorf("%s warm-up: %w", s.name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// summary is a system's figures over all measured rounds.
type summary struct {
	perSec     float64
	cpuPerCert time.Duration
	// cpuMin and cpuMax are the lowest and highest per-round CPU time per
	// certificate: the spread a shared machine adds.
	cpuMin, cpuMax time.Duration
	p50, p99       time.Duration
}

func (s *system) summarize() summary {
	var ops int
	var wall, cpu time.Duration
	var sum summary
	for i, r := range s.rounds {
		ops, wall, cpu = ops+r.ops, wall+r.wall, cpu+r.cpu
		per := r.cpu / time.Duration(r.ops)
		if i == 0 || per < sum.cpuMin {
			sum.cpuMin = per
		}
		sum.cpuMax = max(sum.cpuMax, per)
	}
	if ops == 0 {
		return sum
	}
	sum.perSec = float64(ops) / wall.Seconds()
	sum.cpuPerCert = cpu / time.Duration(ops)
	sum.p50, sum.p99 = percentile(s.latencies, 0.50), percentile(s.latencies, 0.99)
	return sum
}

// percentile returns the q-quantile of d (nearest rank); d is sorted in
// place.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// idleCPU measures, over d with no requests in flight, the CPU time per
// second each system's processes use on their own (timers, background
// work); rounds include it, so a reader can judge its share.
func idleCPU(ctx context.Context, systems []*system, d time.Duration) ([]time.Duration, error) {
	before := make([]map[int]time.Duration, len(systems))
	for i, s := range systems {
		pids, err := s.pids(ctx)
		if err != nil {
			return nil, err
		}
		before[i] = cpuOf(pids)
	}
	time.Sleep(d)
	out := make([]time.Duration, len(systems))
	for i, s := range systems {
		pids, err := s.pids(ctx)
		if err != nil {
			return nil, err
		}
		out[i] = time.Duration(float64(cpuDelta(before[i], cpuOf(pids))) / d.Seconds())
	}
	return out, nil
}
