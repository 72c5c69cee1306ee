package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/meshca/meshca/agent"
	"github.com/meshca/meshca/agent/sdstest"
	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/store"
)

// fleet is n agents of one issuer, built as `meshca agent` builds them
// (cmd/meshca/agent.go: own token file, CA bundle file and SDS socket, no
// Workload API, no health server), each with one emulated Envoy that, as a
// sidecar's does, subscribes to the workload certificate (default) and to
// ROOTCA, and handles every response as Envoy does (check, then ACK or
// NACK). Only the ROOTCA streams are followed for revocations.
type fleet struct {
	streams int
	// current is the revocation being followed; nil before the first.
	current atomic.Pointer[round]
	// ready[i] is closed once stream i has accepted a ROOTCA with a CRL:
	// its agent holds a certificate and follows the issuer's bundle.
	ready []chan struct{}
	// certified[i] is closed once agent i has served its certificate: it
	// is recorded in the store.
	certified []chan struct{}
	// errs receives the first failure of each watcher.
	errs chan error
}

// round is one revocation being followed.
type round struct {
	serial *big.Int
	// start is taken just before the admin call.
	start time.Time
	// arrived receives one arrival per stream; it has room for all.
	arrived chan arrival
}

// arrival is a stream's first ROOTCA response whose CRLs list the serial of
// a round.
type arrival struct {
	stream int
	// latency is from the round's start to the response's receipt, before
	// Envoy's checks of it.
	latency time.Duration
	// crl is the CRL of the response that lists the serial.
	crl *x509.RevocationList
}

// serviceAccount names agent i's service account; its SPIFFE ID is
// s.workloadID(serviceAccount(i)).
func serviceAccount(i int) string { return fmt.Sprintf("workload-%03d", i) }

// startFleet starts n agents and their Envoys against s; they run until
// the end of the test. It does not wait for them to be ready (waitReady).
func startFleet(tb testing.TB, s *issuerStack, n int) *fleet {
	tb.Helper()
	f := &fleet{streams: n, ready: make([]chan struct{}, n), certified: make([]chan struct{}, n), errs: make(chan error, 2*n)}
	base := tb.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var envoys []*sdstest.Envoy
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, e := range envoys {
			e.Close()
		}
		for len(f.errs) > 0 {
			tb.Errorf("after the test: %v", <-f.errs)
		}
	})
	for i := range n {
		f.ready[i], f.certified[i] = make(chan struct{}), make(chan struct{})
		dir := filepath.Join(base, fmt.Sprintf("a%03d", i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			tb.Fatal(err)
		}
		a, err := agent.New(agent.Config{
			IssuerAddress: s.addr,
			CABundleFile:  writeFile(tb, dir, "ca.pem", s.rootPEM, 0o644),
			TokenFile:     writeFile(tb, dir, "token", []byte(s.token(tb, serviceAccount(i))), 0o600),
			SDSSocket:     filepath.Join(dir, "sds.sock"),
			Logger:        discardLogger(),
		})
		if err != nil {
			tb.Fatalf("agent %d: %v", i, err)
		}
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				f.fail(fmt.Errorf("agent %d stopped with: %w", i, err))
			}
		})
		// New has opened the socket: Envoy may connect before Run serves.
		e, err := sdstest.Dial(filepath.Join(dir, "sds.sock"), &corev3.Node{
			Id:      fmt.Sprintf("sidecar~10.0.%d.%d~%s.bench~bench.svc.cluster.local", i/250, i%250+1, serviceAccount(i)),
			Cluster: serviceAccount(i) + ".bench",
		})
		if err != nil {
			tb.Fatal(err)
		}
		envoys = append(envoys, e)
		cert, err := e.Subscribe(ctx, agent.ResourceDefault)
		if err != nil {
			tb.Fatalf("envoy %d: %v", i, err)
		}
		wg.Go(func() {
			if err := f.follow(ctx, i, cert); err != nil {
				f.fail(err)
			}
		})
		sub, err := e.Subscribe(ctx, agent.ResourceRootCA)
		if err != nil {
			tb.Fatalf("envoy %d: %v", i, err)
		}
		wg.Go(func() {
			if err := f.watch(ctx, i, sub); err != nil {
				f.fail(err)
			}
		})
	}
	return f
}

// fail records a watcher's or an agent's failure for the waiting test.
func (f *fleet) fail(err error) {
	select {
	case f.errs <- err:
	default: // the first failures are enough
	}
}

// follow accepts agent i's certificate updates until ctx ends, and
// reports the first.
func (f *fleet) follow(ctx context.Context, i int, sub *sdstest.Subscription) error {
	for first := true; ; first = false {
		if _, err := sub.Next(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agent %d: certificate stream: %w", i, err)
		}
		if first {
			close(f.certified[i])
		}
	}
}

// watch follows stream i until ctx ends, reporting readiness and, for each
// round, the first response whose CRLs list the round's serial.
func (f *fleet) watch(ctx context.Context, i int, sub *sdstest.Subscription) error {
	var reported *round
	ready := false
	for {
		resp, err := sub.Recv(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		at := time.Now()
		u, err := sdstest.Check(resp, agent.ResourceRootCA)
		if err != nil {
			_ = sub.NACK(resp, err.Error()) // the failure below is what matters
			return fmt.Errorf("stream %d: the agent served a ROOTCA Envoy rejects: %w", i, err)
		}
		if err := sub.ACK(resp); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("stream %d: %w", i, err)
		}
		if !ready && len(u.CRLs) > 0 {
			close(f.ready[i])
			ready = true
		}
		r := f.current.Load()
		if r == nil || r == reported {
			continue
		}
		if crl := listing(u.CRLs, r.serial); crl != nil {
			reported = r
			r.arrived <- arrival{stream: i, latency: at.Sub(r.start), crl: crl}
		}
	}
}

// listing returns the first of crls that lists serial, or nil.
func listing(crls []*x509.RevocationList, serial *big.Int) *x509.RevocationList {
	for _, rl := range crls {
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serial) == 0 {
				return rl
			}
		}
	}
	return nil
}

// waitReady waits until every agent has served its certificate and every
// ROOTCA stream has accepted a ROOTCA with a CRL.
func (f *fleet) waitReady(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, step := range []struct {
		what  string
		chans []chan struct{}
	}{{"a certificate", f.certified}, {"a ROOTCA with a CRL", f.ready}} {
		for i, ch := range step.chans {
			select {
			case <-ch:
			case err := <-f.errs:
				tb.Fatal(err)
			case <-deadline.C:
				tb.Fatalf("only %d of %d agents served %s within %v", i, f.streams, step.what, timeout)
			}
		}
	}
}

// revoke revokes serial (hex) on s's admin socket, as `meshca admin revoke
// --serial` does, and returns one arrival per stream, in order of arrival.
// It fails the test unless every stream accepts a ROOTCA whose CRL lists
// serial within timeout of the call.
func (f *fleet) revoke(ctx context.Context, tb testing.TB, s *issuerStack, serial string, timeout time.Duration) []arrival {
	tb.Helper()
	n, ok := new(big.Int).SetString(serial, 16)
	if !ok {
		tb.Fatalf("serial %q is not hexadecimal", serial)
	}
	r := &round{serial: n, arrived: make(chan arrival, f.streams), start: time.Now()}
	f.current.Store(r)
	resp, err := s.admin.Revoke(ctx, &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_Serial{Serial: serial}, Reason: "benchmark",
	})
	if err != nil {
		tb.Fatalf("revoke %s: %v", serial, err)
	}
	if got := resp.GetRevocation(); got.GetKind() != store.RevokeSerial || got.GetValue() != n.Text(16) {
		tb.Fatalf("revoke %s: recorded %s %s", serial, got.GetKind(), got.GetValue())
	}
	deadline := time.NewTimer(time.Until(r.start.Add(timeout)))
	defer deadline.Stop()
	got := make([]arrival, 0, f.streams)
	for len(got) < f.streams {
		select {
		case a := <-r.arrived:
			got = append(got, a)
		case err := <-f.errs:
			tb.Fatal(err)
		case <-deadline.C:
			tb.Fatalf("revocation of %s: %d of %d SDS streams got a CRL listing it within %v; missing: %v",
				serial, len(got), f.streams, timeout, missing(got, f.streams))
		}
	}
	return got
}

// missing lists the streams without an arrival.
func missing(got []arrival, streams int) []int {
	seen := make([]bool, streams)
	for _, a := range got {
		seen[a.stream] = true
	}
	var out []int
	for i, ok := range seen {
		if !ok {
			out = append(out, i)
		}
	}
	return out
}
