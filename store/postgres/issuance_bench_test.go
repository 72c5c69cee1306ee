package postgres_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/sqlite"
)

// BenchmarkIssuanceStore runs the whole issuance path over gRPC (TLS, cached
// token attestation, CSR checks, signing, chain verification, durable
// record with group commit) on SQLite and on PostgreSQL (a private cluster,
// so its CPU time is measurable and nothing else uses it), in the same run,
// from 32×GOMAXPROCS concurrent clients on one TLS connection, as
// issuer/BenchmarkIssuance does. It reports certs/s and CPU time per
// certificate: the process's (clients, server, store) plus, for
// PostgreSQL, the database's. docs/benchmarks.md tracks the PostgreSQL /
// SQLite ratios (target: PostgreSQL costs at most 15% more).
func BenchmarkIssuanceStore(b *testing.B) {
	cluster := pgtest.StartCluster(b)
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(b.TempDir(), "meshca.db")})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		benchIssuance(b, s, nil)
	})
	b.Run("postgres", func(b *testing.B) {
		dsn := pgtest.CreateDatabase(b, cluster.AdminDSN)
		s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, MaxConns: 4})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		benchIssuance(b, s, cluster)
	})
}

// recordingStore is what the benchmark needs from a store.
type recordingStore interface {
	issuer.Recorder
	Certificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error)
}

func benchIssuance(b *testing.B, s recordingStore, cluster *pgtest.Cluster) {
	r := newFleet(b).startReplica(b, "bench", s)
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	cpu := pgtest.StartCPUMeter(b, cluster)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.issue(int(n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	self, db := cpu.Stop(b)
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(perOp(self), "go-cpu-us/op")
	b.ReportMetric(perOp(db), "db-cpu-us/op")
	b.ReportMetric(perOp(self+db), "cpu-us/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	certs, err := s.Certificates(context.Background(), store.CertificateFilter{})
	if err != nil {
		b.Fatal(err)
	}
	if len(certs) != b.N {
		b.Fatalf("%d certificates issued but %d recorded", b.N, len(certs))
	}
}
