package storetest

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
)

// Fixtures for a backend's own tests (batching, tampering, reopening), which
// the conformance suite cannot run because they reach into the backend.

// T0 is the instant every fixture is issued at.
var T0 = t0

// Cert is a one-hour certificate for spiffe://example.org/ns/default/sa/web
// in cluster "east", valid from T0.
func Cert(serial string) store.Certificate {
	return store.Certificate{
		Serial:      serial,
		SPIFFEID:    "spiffe://example.org/ns/default/sa/web",
		Cluster:     "east",
		NotBefore:   T0,
		NotAfter:    T0.Add(time.Hour),
		Fingerprint: strings.Repeat("ab", 32),
	}
}

// Event is the audit event recording the issuance of serial.
func Event(serial string) store.AuditEvent {
	return store.AuditEvent{Time: T0, Actor: "issuer", Action: "certificate.issue", Serial: serial, Detail: "ttl=1h"}
}

// Seed records n issuances with serials s1..sn.
func Seed(t *testing.T, s store.Store, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		serial := fmt.Sprint("s", i)
		if err := s.RecordIssuance(t.Context(), Cert(serial), Event(serial)); err != nil {
			t.Fatalf("RecordIssuance: %v", err)
		}
	}
}

// AuditLog is s's audit log as "seq:serial" pairs separated by spaces.
func AuditLog(t *testing.T, s store.Store) string {
	t.Helper()
	events, err := s.AuditEvents(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range events {
		got = append(got, fmt.Sprint(ev.Seq, ":", ev.Serial))
	}
	return strings.Join(got, " ")
}

// RecordParallel records b.N issuances from 32 callers per core, as an
// issuer under load does. Serials are random like real 128-bit serials, so
// inserts land on random index pages, as in production.
func RecordParallel(b *testing.B, s store.Store) {
	var n atomic.Int64
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			serial := fmt.Sprintf("%016x%x", mrand.Uint64(), n.Add(1))
			if err := s.RecordIssuance(context.Background(), Cert(serial), Event(serial)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
