package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshca/meshca/ca/catest"
	"github.com/meshca/meshca/test/benchcpu"
)

// BenchmarkIssuanceProcess measures issue 2's target with the issuer in its
// own process, as deployed: `meshca dev` (TLS, cached dev-token attestation,
// CSR checks, signing, verification, SQLite with synchronous=FULL, a log
// line per certificate) driven over gRPC by benchClients concurrent clients
// in this process, each acting as one of benchAgents agents with its own
// token. The crypto floor (CSR signature check + x509.CreateCertificate) is
// measured in the same run.
//
// Besides ns/op it reports, per issuance, the CPU time of the meshca process
// (server-cpu-us/op, from /proc/PID/stat) and of this process, the clients
// (cpu-us/op). The floor's cpu-us/op over server-cpu-us/op is what
// share of the floor's throughput the issuer keeps on the same cores when
// its clients run elsewhere; floor ns/op over issuance ns/op is the share
// with the clients on the same two cores (docs/benchmarks.md).
func BenchmarkIssuanceProcess(b *testing.B) {
	csrs := make([]string, 64)
	for i := range csrs {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			b.Fatal(err)
		}
		csrs[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	b.Run("floor", func(b *testing.B) { benchFloor(b, csrs) })
	b.Run("meshca-dev", func(b *testing.B) { benchProcess(b, csrs) })
}

const (
	benchAgents  = 16
	benchClients = 64
)

func benchFloor(b *testing.B, csrs []string) {
	tree := catest.New(b, catest.Options{})
	id, _ := url.Parse("spiffe://cluster.local/ns/bench/sa/web")
	var n atomic.Int64
	b.ResetTimer()
	defer benchcpu.Start(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			block, _ := pem.Decode([]byte(csrs[i%int64(len(csrs))]))
			csr, err := x509.ParseCertificateRequest(block.Bytes)
			if err == nil {
				err = csr.CheckSignature()
			}
			if err != nil {
				b.Error(err)
				return
			}
			now := time.Now()
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(i), URIs: []*url.URL{id}, NotBefore: now, NotAfter: now.Add(time.Hour),
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			}
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, tree.Intermediate.Certificate, csr.PublicKey, tree.Intermediate.Signer); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchProcess(b *testing.B, csrs []string) {
	srv := startDev(b, devOptions{})
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
	defer conn.Close()
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
	var n atomic.Int64
	b.SetParallelism(max(1, benchClients/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	serverStart := processCPU(b, srv.cmd.Process.Pid)
	stopClient := benchcpu.Start(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := issue(n.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	stopClient()
	serverCPU := processCPU(b, srv.cmd.Process.Pid) - serverStart
	b.ReportMetric(float64(serverCPU.Microseconds())/float64(b.N), "server-cpu-us/op")
}

// processCPU is the CPU time (user + system) process pid has used so far,
// from /proc/PID/stat, in clock ticks of 10ms.
func processCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	var ticks int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += v
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(ticks) * time.Second / clockTicks
}
