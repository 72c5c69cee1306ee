package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/benchcpu"
)

const (
	// benchAgents is how many agents (tokens) the clients take turns as.
	benchAgents = 16
	// benchClients is how many requests are in flight at once.
	benchClients = 64
	// benchRoundOps is how many issuances each side does per round.
	benchRoundOps = 2000
)

// BenchmarkIssuanceRatio measures the issuance target (at least 0.6 of the crypto floor): issuance through the
// whole path as a share of the crypto floor, with the issuer in its own
// process as deployed. `meshca dev` (TLS, cached dev-token attestation, CSR
// checks, signing, verification, SQLite with synchronous=FULL, a log line
// per certificate) is driven over gRPC by benchClients concurrent clients
// in this process, each acting as one of benchAgents agents with its own
// token. The floor is CSR signature check + x509.CreateCertificate alone,
// on one goroutine per core (its best).
//
// Each b.N iteration is one round: benchRoundOps floor operations, then
// benchRoundOps issuances. Interleaving keeps the two comparable on a
// machine whose speed drifts (shared hosts), where two sub-benchmarks run
// seconds apart are not. It reports, summed over all rounds:
//
//   - ratio: floor time per operation / issuance time per operation, both
//     on the same two cores, the clients' work included (their TLS, HTTP/2
//     and protobuf cost the issuer's cores here, not in a cluster);
//   - server-cpu-ratio: the floor's CPU time per operation / the meshca
//     process's CPU time per issuance (from /proc/PID/stat): the share of
//     the floor's throughput the issuer keeps when its clients are
//     elsewhere, as they are in a cluster;
//   - floor-us/op, issue-us/op, floor-cpu-us/op, server-cpu-us/op,
//     client-cpu-us/op.
//
// Run it with a number of rounds: go test -bench IssuanceRatio -benchtime 10x
func BenchmarkIssuanceRatio(b *testing.B) {
	// The floor runs under the same garbage-collection target as the
	// issuer (meshca dev and issuer serve default to 400; cmd/meshca), so
	// neither side is charged for a GC setting the other does not have.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	csrs := benchCSRs(b)
	floor := newFloor(b, csrs)
	whole := newWholePath(b, csrs, devOptions{})
	var floorWall, floorCPU, wholeWall, serverCPU, clientCPU time.Duration
	b.ResetTimer()
	for range b.N {
		w, c := measure(b, runtime.GOMAXPROCS(0), floor)
		floorWall, floorCPU = floorWall+w, floorCPU+c
		s0 := processCPU(b, whole.pid)
		w, c = measure(b, benchClients, whole.issue)
		wholeWall, clientCPU = wholeWall+w, clientCPU+c
		serverCPU += processCPU(b, whole.pid) - s0
	}
	b.StopTimer()
	ops := float64(b.N * benchRoundOps)
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / ops }
	b.ReportMetric(perOp(floorWall), "floor-us/op")
	b.ReportMetric(perOp(wholeWall), "issue-us/op")
	b.ReportMetric(perOp(floorCPU), "floor-cpu-us/op")
	b.ReportMetric(perOp(serverCPU), "server-cpu-us/op")
	b.ReportMetric(perOp(clientCPU), "client-cpu-us/op")
	b.ReportMetric(float64(floorWall)/float64(wholeWall), "ratio")
	b.ReportMetric(float64(floorCPU)/float64(serverCPU), "server-cpu-ratio")
}

// measure runs benchRoundOps calls of op on the given number of goroutines
// and returns the wall time and this process's CPU time they took.
func measure(b *testing.B, goroutines int, op func(i int64) error) (wall, cpu time.Duration) {
	var n atomic.Int64
	var wg sync.WaitGroup
	cpu0, start := benchcpu.Process(b), time.Now()
	for range goroutines {
		wg.Go(func() {
			for i := n.Add(1); i <= benchRoundOps; i = n.Add(1) {
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), benchcpu.Process(b) - cpu0
}

func benchCSRs(b *testing.B) []string {
	csrs := make([]string, 64)
	for i := range csrs {
		csrs[i] = string(testkit.CSRPEM(b))
	}
	return csrs
}

// newFloor returns the crypto floor as one operation: parse and check the
// CSR, then x509.CreateCertificate (which also verifies its signature).
func newFloor(b *testing.B, csrs []string) func(i int64) error {
	tree := testkit.New(b, testkit.Options{})
	id, _ := url.Parse("spiffe://cluster.local/ns/bench/sa/web")
	return func(i int64) error {
		return floorOp(tree.Intermediate, id, csrs[i%int64(len(csrs))], i)
	}
}

func floorOp(in *ca.Authority, id *url.URL, csrPEM string, serial int64) error {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil {
		return fmt.Errorf("no PEM in CSR")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), URIs: []*url.URL{id}, NotBefore: now, NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	_, err = x509.CreateCertificate(rand.Reader, tmpl, in.Certificate, csr.PublicKey, in.Signer)
	return err
}

type wholePath struct {
	pid   int
	issue func(i int64) error
}

// newWholePath starts `meshca dev` with opts and returns a warmed-up
// issuance operation against it and its process ID.
func newWholePath(b *testing.B, csrs []string, opts devOptions) wholePath {
	srv := startDev(b, opts)
	pool := x509.NewCertPool()
	bundle, err := os.ReadFile(srv.BundlePath())
	if err != nil || !pool.AppendCertsFromPEM(bundle) {
		b.Fatalf("read %s: %v", srv.BundlePath(), err)
	}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "istiod.istio-system.svc",
	})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	client := pb.NewIstioCertificateServiceClient(conn)
	agents := make([]context.Context, benchAgents)
	for i := range agents {
		tok, _ := mintToken(b, srv.Dir, fmt.Sprintf("token-%d", i), "--namespace", "bench", "--service-account", fmt.Sprintf("sa-%d", i))
		agents[i] = metadata.NewOutgoingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	}
	issue := func(i int64) error {
		resp, err := client.CreateCertificate(agents[i%benchAgents], &pb.IstioCertificateRequest{Csr: csrs[i%int64(len(csrs))]})
		if err == nil && len(resp.GetCertChain()) < 2 {
			err = fmt.Errorf("chain of %d certificates", len(resp.GetCertChain()))
		}
		return err
	}
	// Warm up: TLS handshake, attestation cache, the SQLite file.
	for i := range int64(2 * benchAgents) {
		if err := issue(i); err != nil {
			b.Fatal(err)
		}
	}
	return wholePath{pid: srv.cmd.Process.Pid, issue: issue}
}

// processCPU is the CPU time (user + system) process pid has used so far.
func processCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	st, err := benchcpu.ReadStat(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	return st.UTime + st.STime
}
