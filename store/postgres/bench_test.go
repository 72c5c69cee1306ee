package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/storetest"
)

// BenchmarkRecordIssuance compares, in one run, group commit with one
// transaction per record on a private PostgreSQL cluster (so that its CPU
// time can be measured and nothing else uses it), under many concurrent
// callers (as an issuer under load has), with the audit chain maintained.
// It reports records/s (wall) and the CPU time per record of this process
// and of the database; after each, the chain is verified and rows counted.
func BenchmarkRecordIssuance(b *testing.B) {
	cluster := pgtest.StartCluster(b)
	for _, bc := range []struct {
		name     string
		maxBatch int
	}{
		{"batched", 0},
		{"unbatched", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dsn := pgtest.CreateDatabase(b, cluster.AdminDSN)
			s := openTest(b, Config{DSN: dsn, GroupCommit: store.GroupCommitConfig{MaxBatch: bc.maxBatch}})
			b.ResetTimer()
			cpu := pgtest.StartCPUMeter(b, cluster)
			storetest.RecordParallel(b, s)
			b.StopTimer()
			self, db := cpu.Stop(b)
			reportCPU(b, self, db)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			checkRecorded(b, s, dsn, b.N)
		})
	}
}

// reportCPU reports CPU time per operation: this process's, the
// database's, and their sum.
func reportCPU(b *testing.B, self, db time.Duration) {
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(perOp(self), "go-cpu-us/op")
	b.ReportMetric(perOp(db), "db-cpu-us/op")
	b.ReportMetric(perOp(self+db), "cpu-us/op")
}

// checkRecorded fails b unless the store holds exactly n certificates and a
// chain of n events that verifies.
func checkRecorded(b *testing.B, s *Store, dsn string, n int) {
	b.Helper()
	var rows int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM certificates`).Scan(&rows); err != nil {
		b.Fatal(err)
	}
	head, err := VerifyAuditLog(context.Background(), dsn)
	if err != nil {
		b.Fatalf("VerifyAuditLog: %v", err)
	}
	if rows != n || head.Seq != int64(n) {
		b.Fatalf("%d records written, but %d certificate rows and %d audit events", n, rows, head.Seq)
	}
}
