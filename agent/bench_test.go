package agent

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/meshca/meshca/agent/sdstest"
	"github.com/meshca/meshca/internal/testkit"
)

// BenchmarkSDSRotationPush measures, per rotation, the time from Publish to
// the moment the last of N open SDS streams has received the new
// certificate. The streams are spread over 10 connections, like 10 Envoys,
// and ACK every response as Envoy does (the server handles those ACKs while
// it pushes). Envoy's own checks of a response happen in Envoy's process;
// here they would compete for the same 2 cores, so each stream's first and
// last responses are checked outside the timed rotations instead. Reported:
// p50, p99 and max over all rotations of the run, and CPU per rotation.
func BenchmarkSDSRotationPush(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchPush(b, n) })
	}
}

func benchPush(b *testing.B, streams int) {
	tree := testkit.New(b, testkit.Options{})
	snaps := []*snapshot{
		mustSnapshot(b, newSVID(b, tree, webID, time.Hour), tree.Bundle),
		mustSnapshot(b, newSVID(b, tree, webID, time.Hour), tree.Bundle),
	}
	pub := newPublisher()
	pub.Publish(snaps[0])
	path := startSDS(b, pub, discardLogger())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	received, lastResp := openBenchStreams(ctx, b, path, streams)

	var lat []time.Duration
	cpuBefore := cpuTime(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		pub.Publish(snaps[(i+1)%2])
		var last time.Time
		for range streams {
			select {
			case at := <-received:
				if at.After(last) {
					last = at
				}
			case <-time.After(waitTimeout):
				b.Fatalf("rotation %d: not every stream got the push within %v", i, waitTimeout)
			}
		}
		lat = append(lat, last.Sub(start))
	}
	b.StopTimer()
	cpu := cpuTime(b) - cpuBefore
	want, _ := pub.Current()
	for i, resp := range lastResp {
		u, err := sdstest.Check(resp, ResourceDefault)
		if err != nil {
			b.Fatalf("stream %d: last response: %v", i, err)
		}
		if u.Version != want.SVIDVersion() {
			b.Fatalf("stream %d: last response has version %q, want %q", i, u.Version, want.SVIDVersion())
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// openBenchStreams opens n SDS streams for default over 10 connections, each
// read by one goroutine that sends the arrival time of every response to
// received, keeps it in lastResp and ACKs it, the least client work the
// protocol allows. Each stream's first response is checked.
func openBenchStreams(ctx context.Context, b *testing.B, path string, n int) (received chan time.Time, lastResp []*discoveryv3.DiscoveryResponse) {
	b.Helper()
	envoys := make([]*sdstest.Envoy, 10)
	for i := range envoys {
		envoys[i] = envoy(b, path, fmt.Sprintf("bench-%d", i))
	}
	received = make(chan time.Time, n)
	lastResp = make([]*discoveryv3.DiscoveryResponse, n)
	for i := range n {
		stream, err := envoys[i%len(envoys)].Client().StreamSecrets(ctx)
		if err != nil {
			b.Fatal(err)
		}
		req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "bench"}, ResourceNames: []string{ResourceDefault}, TypeUrl: secretTypeURL}
		if err := stream.Send(req); err != nil {
			b.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sdstest.Check(resp, ResourceDefault); err != nil {
			b.Fatal(err)
		}
		ack := func(resp *discoveryv3.DiscoveryResponse) error {
			return stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
				ResourceNames: []string{ResourceDefault}, TypeUrl: secretTypeURL})
		}
		if err := ack(resp); err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				at := time.Now()
				lastResp[i] = resp // read after every stream got its push: the send below orders it
				received <- at
				if ack(resp) != nil {
					return
				}
			}
		}()
	}
	return received, lastResp
}

// cpuTime is the CPU time (user + system) this process has used. On a
// shared machine it is a steadier measure of the work done than wall time.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
