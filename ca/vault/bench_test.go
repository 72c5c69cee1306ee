package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/meshca/meshca/test/vaulttest"
)

// BenchmarkVaultSign signs SHA-256 digests with an ECDSA P-256 key from
// parallel goroutines: in Vault Transit over loopback (each signature is
// also verified locally), and with an in-memory key as the baseline.
// Both report ops/s; run with -cpu to vary the parallelism.
func BenchmarkVaultSign(b *testing.B) {
	digest := digestOf(crypto.SHA256, "benchmark")
	run := func(b *testing.B, s crypto.Signer) {
		b.SetParallelism(4) // 4 goroutines per GOMAXPROCS: Vault calls wait on the network
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Sign(rand.Reader, digest, crypto.SHA256); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	}
	b.Run("vault-transit-ecdsa-p256", func(b *testing.B) {
		v := vaulttest.Shared(b)
		cfg := tokenConfig(v, v.Token, "bench-ecdsa-p256")
		run(b, newSigner(b, cfg))
	})
	b.Run("in-memory-ecdsa-p256", func(b *testing.B) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		run(b, key)
	})
}
