package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
)

// testPruneCertificates checks store.Pruner, for backends that implement it:
// only certificates that expired strictly before the cutoff go, and every
// audit event stays.
func testPruneCertificates(t *testing.T, s store.Store) {
	if c, ok := s.(*closeOnce); ok {
		s = c.Store
	}
	p, ok := s.(store.Pruner)
	if !ok {
		t.Skip("backend does not implement store.Pruner")
	}
	h := time.Hour
	mustRecord(t, s,
		newCert("p1", idWeb, "east", t0.Add(-3*h), t0.Add(-2*h)),
		newCert("p2", idWeb, "west", t0.Add(-2*h), t0.Add(-h)),
		newCert("p3", idDB, "east", t0.Add(-h), t0), // expires exactly at t0
		newCert("p4", idDB, "west", t0, t0.Add(h)),
	)
	if err := s.AppendAudit(t.Context(), store.AuditEvent{Time: t0, Actor: "admin:dave", Action: "bundle.publish"}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	steps := []struct {
		before      time.Time
		wantDeleted int64
		wantLeft    []string
	}{
		{t0.Add(-2*h - time.Second), 0, []string{"p4", "p3", "p2", "p1"}},
		{t0, 2, []string{"p4", "p3"}}, // NotAfter == cutoff stays
		{t0, 0, []string{"p4", "p3"}}, // idempotent
		{t0.Add(500 * time.Millisecond), 1, []string{"p4"}},
	}
	for i, st := range steps {
		n, err := p.PruneCertificates(t.Context(), st.before)
		if err != nil {
			t.Fatalf("step %d: PruneCertificates(%v): %v", i, st.before, err)
		}
		if n != st.wantDeleted {
			t.Errorf("step %d: PruneCertificates(%v) deleted %d, want %d", i, st.before, n, st.wantDeleted)
		}
		left, err := s.Certificates(t.Context(), store.CertificateFilter{})
		if err != nil {
			t.Fatalf("Certificates: %v", err)
		}
		if got := serials(left); !slices.Equal(got, st.wantLeft) {
			t.Fatalf("step %d: after prune left %v, want %v", i, got, st.wantLeft)
		}
	}
	// The audit log is whole: four issuances and one other event.
	events := checkChain(t, s, 5)
	for i, serial := range []string{"p1", "p2", "p3", "p4"} {
		if events[i].Serial != serial {
			t.Errorf("event %d is for %q, want %q", events[i].Seq, events[i].Serial, serial)
		}
	}
	if _, err := p.PruneCertificates(t.Context(), t0.Add(100*h)); err != nil {
		t.Fatalf("PruneCertificates(everything): %v", err)
	}
	checkChain(t, s, 5)
}
