package issuer_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/test/openloop"
)

// seqKey is the request metadata that carries a latency benchmark's request
// number to the server side, where phaseClock stamps it.
const seqKey = "x-bench-seq"

// The instants phaseClock stamps in the life of one request, on the server.
const (
	markAttestStart = iota
	markAttestEnd
	markRecordStart
	markRecordEnd
	nMarks
)

// phaseClock times the server-side phases of each request of a latency
// benchmark by wrapping the issuer's attestor and recorder: attestation
// begins once the request has crossed the client, the connection and the
// gRPC server; between attestation and the recorder the issuer checks the
// CSR, signs and verifies; the recorder waits for the store's commit; after
// it come the revocation re-check, the response and its way back.
type phaseClock struct {
	start time.Time
	marks [nMarks][]atomic.Int64 // nanoseconds since start; 0: not stamped
}

func newPhaseClock(n int) *phaseClock {
	c := &phaseClock{start: time.Now()}
	for m := range c.marks {
		c.marks[m] = make([]atomic.Int64, n)
	}
	return c
}

// wrap is a wireOptions.wrap.
func (c *phaseClock) wrap(a issuer.Attestor, r issuer.Recorder) (issuer.Attestor, issuer.Recorder) {
	return timedAttestor{a, c}, timedRecorder{r, c}
}

// stamp records mark for the request ctx carries the number of, if any.
func (c *phaseClock) stamp(ctx context.Context, mark int) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(seqKey)
	if len(v) == 0 {
		return
	}
	if i, err := strconv.Atoi(v[0]); err == nil && i >= 0 && i < len(c.marks[mark]) {
		c.marks[mark][i].Store(max(int64(time.Since(c.start)), 1))
	}
}

// at returns the instant mark was stamped for request i.
func (c *phaseClock) at(mark, i int) (time.Time, bool) {
	ns := c.marks[mark][i].Load()
	return c.start.Add(time.Duration(ns)), ns != 0
}

type timedAttestor struct {
	issuer.Attestor
	c *phaseClock
}

func (a timedAttestor) Attest(ctx context.Context, req attest.Request) (attest.Identity, error) {
	a.c.stamp(ctx, markAttestStart)
	defer a.c.stamp(ctx, markAttestEnd)
	return a.Attestor.Attest(ctx, req)
}

type timedRecorder struct {
	issuer.Recorder
	c *phaseClock
}

func (r timedRecorder) RecordIssuance(ctx context.Context, cert store.Certificate, ev store.AuditEvent) error {
	r.c.stamp(ctx, markRecordStart)
	defer r.c.stamp(ctx, markRecordEnd)
	return r.Recorder.RecordIssuance(ctx, cert, ev)
}

// phaseNames name the columns of phases, in order.
var phaseNames = []string{"lag", "in", "attest", "sign", "commit", "out"}

// phases splits request i's latency: the sender's lag; "in", from being
// handed to a worker to attestation starting (client, TLS, HTTP/2, the
// server's dispatch and decoding); attestation; "sign", the CSR checks,
// signing and verification; the store's commit; "out", from the commit to
// the client holding the response.
func (c *phaseClock) phases(res openloop.Result, interval time.Duration, i int) ([]time.Duration, bool) {
	var t [nMarks]time.Time
	for m := range t {
		var ok bool
		if t[m], ok = c.at(m, i); !ok {
			return nil, false
		}
	}
	sched := res.Start.Add(time.Duration(i) * interval)
	sent := sched.Add(res.Lag[i])
	done := sched.Add(res.Latency[i])
	return []time.Duration{
		res.Lag[i],
		t[markAttestStart].Sub(sent),
		t[markAttestEnd].Sub(t[markAttestStart]),
		t[markRecordStart].Sub(t[markAttestEnd]),
		t[markRecordEnd].Sub(t[markRecordStart]),
		done.Sub(t[markRecordEnd]),
	}, true
}

// logPhases logs the mean of each phase over the median requests (45th to
// 55th percentile of latency) and over the slowest 1%, and when the slowest
// 1% were scheduled: a tail gathered in a few bursts points at a stall of
// the whole process, one spread over the run at queueing.
func (c *phaseClock) logPhases(b *testing.B, res openloop.Result, interval time.Duration) {
	if len(res.Latency) < 100 { // too few for a slowest 1% (the b.N=1 probe run)
		return
	}
	order := make([]int, len(res.Latency))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return int(res.Latency[x] - res.Latency[y]) })
	n := len(order)
	mean := func(idx []int) string {
		sum := make([]time.Duration, len(phaseNames))
		count := 0
		for _, i := range idx {
			ph, ok := c.phases(res, interval, i)
			if !ok {
				continue
			}
			count++
			for k, d := range ph {
				sum[k] += d
			}
		}
		var sb strings.Builder
		for k, name := range phaseNames {
			fmt.Fprintf(&sb, " %s %.2f", name, float64(sum[k].Microseconds())/1000/float64(max(count, 1)))
		}
		return fmt.Sprintf("%s ms (%d requests)", sb.String(), count)
	}
	slow := order[n-max(n/100, 1):]
	b.Logf("phases, median requests:%s", mean(order[n*45/100:n*55/100]))
	b.Logf("phases, slowest 1%%:%s", mean(slow))
	b.Logf("slowest 1%% scheduled at (ms from start, requests): %s", bursts(slices.Sorted(slices.Values(slow)), interval))
}

// bursts groups sorted request numbers into runs whose scheduled instants
// are less than 20 ms apart.
func bursts(idx []int, interval time.Duration) string {
	var out []string
	gap := int(20 * time.Millisecond / interval)
	for k := 0; k < len(idx); {
		j := k + 1
		for j < len(idx) && idx[j]-idx[j-1] < gap {
			j++
		}
		ms := func(i int) int64 { return (time.Duration(i) * interval).Milliseconds() }
		out = append(out, fmt.Sprintf("%d-%d (%d)", ms(idx[k]), ms(idx[j-1]), j-k))
		k = j
	}
	return strings.Join(out, ", ")
}
