// Package storetest is the conformance suite every store.Store backend must
// pass. Backends run it from their own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openTestStore(t) })
//	}
//
// The suite uses only the store.Store contract: no SQL, no assumptions about
// the backend's clock, and times compared at the contract's precision (whole
// seconds, UTC).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
)

// Run runs the suite. open must return a new, empty store for the calling
// sub-test (it may register its own t.Cleanup, for example to drop a schema);
// Run closes the store when the sub-test ends, so open must not.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	runCases(t, open, func(s store.Store) store.Store { return &closeOnce{Store: s} }, []testCase[store.Store]{
		{"RecordIssuanceReadBack", testRecordIssuanceReadBack},
		{"CertificateNotFound", testCertificateNotFound},
		{"CertificatesFilter", testCertificatesFilter},
		{"DuplicateSerial", testDuplicateSerial},
		{"AuditChain", testAuditChain},
		{"AuditHead", testAuditHead},
		{"AuditZeroTimeIsSet", testAuditZeroTimeIsSet},
		{"AuditEventsSince", testAuditEventsSince},
		{"ConcurrentRecordIssuance", testConcurrentRecordIssuance},
		{"CanceledContext", testCanceledContext},
		{"AfterClose", testAfterClose},
		{"PruneCertificates", testPruneCertificates},
	})
}

// testCase is one test of a suite, on a store of type S.
type testCase[S any] struct {
	name string
	fn   func(t *testing.T, s S)
}

// runCases runs each case as a sub-test on a new store from open, wrapped
// by once so that a test may close the store itself while the cleanup
// still closes it in every other case, without asking backends to tolerate
// a second Close.
func runCases[S io.Closer](t *testing.T, open func(t *testing.T) S, once func(S) S, cases []testCase[S]) {
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			s := once(open(t))
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// onceCloser makes a Close method close at most once and repeat its result.
type onceCloser struct {
	once sync.Once
	err  error
}

func (o *onceCloser) close(f func() error) error {
	o.once.Do(func() { o.err = f() })
	return o.err
}

// closeOnce is a store.Store whose Close closes at most once.
type closeOnce struct {
	store.Store
	onceCloser
}

func (c *closeOnce) Close() error { return c.close(c.Store.Close) }

// t0 is the suite's reference instant; nothing depends on the real clock.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	idWeb = "spiffe://example.org/ns/default/sa/web"
	idDB  = "spiffe://example.org/ns/default/sa/db"
)

func newCert(serial, id, cluster string, notBefore, notAfter time.Time) store.Certificate {
	return store.Certificate{
		Serial:      serial,
		SPIFFEID:    id,
		Cluster:     cluster,
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		Fingerprint: fmt.Sprintf("%064x", serial),
		PodUID:      "pod-" + serial,
	}
}

func issueEvent(c store.Certificate) store.AuditEvent {
	return store.AuditEvent{
		Time:     c.NotBefore,
		Actor:    "system:serviceaccount:meshca:issuer",
		Action:   "certificate.issue",
		Cluster:  c.Cluster,
		SPIFFEID: c.SPIFFEID,
		Serial:   c.Serial,
		Detail:   "ttl=1h",
	}
}

// stored is t as the contract stores it: whole seconds, UTC.
func stored(t time.Time) time.Time { return time.Unix(t.Unix(), 0).UTC() }

func wantStoredCert(c store.Certificate) store.Certificate {
	c.NotBefore, c.NotAfter = stored(c.NotBefore), stored(c.NotAfter)
	return c
}

func checkCert(t *testing.T, got, want store.Certificate) {
	t.Helper()
	want = wantStoredCert(want)
	if got.Serial != want.Serial || got.SPIFFEID != want.SPIFFEID || got.Cluster != want.Cluster ||
		got.Fingerprint != want.Fingerprint || got.PodUID != want.PodUID ||
		!got.NotBefore.Equal(want.NotBefore) || !got.NotAfter.Equal(want.NotAfter) {
		t.Errorf("certificate mismatch\n got %+v\nwant %+v", got, want)
	}
	if got.NotBefore.Location() != time.UTC || got.NotAfter.Location() != time.UTC {
		t.Errorf("certificate %s: times not in UTC: %v, %v", got.Serial, got.NotBefore, got.NotAfter)
	}
}

// checkEvent compares the caller-supplied fields of an event.
func checkEvent(t *testing.T, got, want store.AuditEvent) {
	t.Helper()
	if got.Actor != want.Actor || got.Action != want.Action || got.Cluster != want.Cluster ||
		got.SPIFFEID != want.SPIFFEID || got.Serial != want.Serial || got.Detail != want.Detail ||
		!got.Time.Equal(stored(want.Time)) {
		t.Errorf("audit event mismatch\n got %+v\nwant %+v", got, want)
	}
	if got.Time.Location() != time.UTC {
		t.Errorf("audit event %d: time %v not in UTC", got.Seq, got.Time)
	}
}

// checkChain reads the whole audit log and checks it is a valid chain of n
// events numbered 1..n.
func checkChain(t *testing.T, s store.Store, n int) []store.AuditEvent {
	t.Helper()
	events, err := s.AuditEvents(t.Context(), time.Time{})
	if err != nil {
		t.Fatalf("AuditEvents: %v", err)
	}
	if len(events) != n {
		t.Fatalf("audit log has %d events, want %d", len(events), n)
	}
	for i, ev := range events {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d, want %d", i, ev.Seq, i+1)
		}
	}
	if err := store.VerifyChain(events); err != nil {
		t.Fatalf("audit chain does not verify: %v", err)
	}
	return events
}

func mustRecord(t *testing.T, s store.Store, certs ...store.Certificate) {
	t.Helper()
	for _, c := range certs {
		if err := s.RecordIssuance(t.Context(), c, issueEvent(c)); err != nil {
			t.Fatalf("RecordIssuance(%s): %v", c.Serial, err)
		}
	}
}

func serials(certs []store.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = c.Serial
	}
	return out
}

func testRecordIssuanceReadBack(t *testing.T, s store.Store) {
	zone := time.FixedZone("UTC+5", 5*3600)
	c := newCert("0a1b2c", idWeb, "east",
		t0.Add(123456789*time.Nanosecond).In(zone), t0.Add(time.Hour+999*time.Millisecond).In(zone))
	ev := issueEvent(c)
	// What the caller puts in store-assigned fields is ignored.
	ev.Seq, ev.PrevHash, ev.Hash = 42, []byte("junk"), []byte("junk")
	if err := s.RecordIssuance(t.Context(), c, ev); err != nil {
		t.Fatalf("RecordIssuance: %v", err)
	}
	got, err := s.Certificate(t.Context(), c.Serial)
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	checkCert(t, got, c)

	events := checkChain(t, s, 1)
	checkEvent(t, events[0], ev)
	if len(events[0].PrevHash) != store.HashSize || slices.ContainsFunc(events[0].PrevHash, func(b byte) bool { return b != 0 }) {
		t.Errorf("first event PrevHash = %x, want %d zero bytes", events[0].PrevHash, store.HashSize)
	}
}

func testCertificateNotFound(t *testing.T, s store.Store) {
	_, err := s.Certificate(t.Context(), "deadbeef")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Certificate(unknown) = %v, want ErrNotFound", err)
	}
	mustRecord(t, s, newCert("01", idWeb, "east", t0, t0.Add(time.Hour)))
	if _, err := s.Certificate(t.Context(), "02"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Certificate(unknown) in a non-empty store = %v, want ErrNotFound", err)
	}
}

func testCertificatesFilter(t *testing.T, s store.Store) {
	h := time.Hour
	certs := []store.Certificate{
		newCert("s01", idWeb, "east", t0.Add(-2*h), t0.Add(-h)), // expired at t0
		newCert("s02", idWeb, "east", t0.Add(-30*time.Minute), t0.Add(30*time.Minute)),
		newCert("s04", idDB, "east", t0.Add(-10*time.Minute), t0.Add(50*time.Minute)),
		newCert("s03", idWeb, "west", t0.Add(-10*time.Minute), t0.Add(50*time.Minute)),
		newCert("s05", idDB, "west", t0.Add(h), t0.Add(2*h)), // not yet valid at t0
	}
	mustRecord(t, s, certs...)

	half := 500 * time.Millisecond
	tests := []struct {
		name   string
		filter store.CertificateFilter
		want   []string
	}{
		{"all, newest first, ties by serial", store.CertificateFilter{}, []string{"s05", "s03", "s04", "s02", "s01"}},
		{"spiffe id", store.CertificateFilter{SPIFFEID: idWeb}, []string{"s03", "s02", "s01"}},
		{"cluster", store.CertificateFilter{Cluster: "east"}, []string{"s04", "s02", "s01"}},
		{"spiffe id and cluster", store.CertificateFilter{SPIFFEID: idWeb, Cluster: "east"}, []string{"s02", "s01"}},
		{"active at t0", store.CertificateFilter{ActiveAt: t0}, []string{"s03", "s04", "s02"}},
		{"active at NotAfter is inclusive", store.CertificateFilter{ActiveAt: t0.Add(30 * time.Minute)}, []string{"s03", "s04", "s02"}},
		{"active just after NotAfter", store.CertificateFilter{ActiveAt: t0.Add(30*time.Minute + half)}, []string{"s03", "s04"}},
		{"active at NotBefore is inclusive", store.CertificateFilter{ActiveAt: t0.Add(h)}, []string{"s05"}},
		{"active just before NotBefore", store.CertificateFilter{ActiveAt: t0.Add(h - half)}, nil},
		{"active at and spiffe id", store.CertificateFilter{ActiveAt: t0, SPIFFEID: idDB}, []string{"s04"}},
		{"limit", store.CertificateFilter{Limit: 2}, []string{"s05", "s03"}},
		{"limit with cluster", store.CertificateFilter{Cluster: "east", Limit: 1}, []string{"s04"}},
		{"limit above count", store.CertificateFilter{Limit: 100}, []string{"s05", "s03", "s04", "s02", "s01"}},
		{"no match", store.CertificateFilter{SPIFFEID: "spiffe://example.org/nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Certificates(t.Context(), tt.filter)
			if err != nil {
				t.Fatalf("Certificates: %v", err)
			}
			if !slices.Equal(serials(got), tt.want) {
				t.Fatalf("Certificates(%+v) = %v, want %v", tt.filter, serials(got), tt.want)
			}
		})
	}

	// Listed certificates are complete records, not just serials.
	got, err := s.Certificates(t.Context(), store.CertificateFilter{SPIFFEID: idDB, Cluster: "west"})
	if err != nil || len(got) != 1 {
		t.Fatalf("Certificates(db, west) = %v, %v; want one certificate", got, err)
	}
	checkCert(t, got[0], certs[4])
}

func testDuplicateSerial(t *testing.T, s store.Store) {
	orig := newCert("d00d", idWeb, "east", t0, t0.Add(time.Hour))
	mustRecord(t, s, orig)

	dup := orig
	dup.Fingerprint = fmt.Sprintf("%064x", "other")
	dupEvent := issueEvent(dup)
	dupEvent.Detail = "duplicate"
	if err := s.RecordIssuance(t.Context(), dup, dupEvent); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("RecordIssuance(duplicate) = %v, want ErrAlreadyExists", err)
	}

	// The same, alongside good writes that may share its transaction: only
	// the duplicate fails, and it leaves no trace.
	const rounds, good = 3, 8
	for r := range rounds {
		errs := allAtOnce(good+1, func(i int) error {
			if i == good {
				return s.RecordIssuance(t.Context(), dup, dupEvent)
			}
			c := newCert(fmt.Sprintf("r%dg%d", r, i), idDB, "west", t0, t0.Add(time.Hour))
			return s.RecordIssuance(t.Context(), c, issueEvent(c))
		})
		for i, err := range errs[:good] {
			if err != nil {
				t.Errorf("round %d: good write %d failed beside a duplicate: %v", r, i, err)
			}
		}
		if !errors.Is(errs[good], store.ErrAlreadyExists) {
			t.Errorf("round %d: duplicate = %v, want ErrAlreadyExists", r, errs[good])
		}
	}

	got, err := s.Certificate(t.Context(), orig.Serial)
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	checkCert(t, got, orig)
	all, err := s.Certificates(t.Context(), store.CertificateFilter{})
	if err != nil {
		t.Fatalf("Certificates: %v", err)
	}
	if len(all) != 1+rounds*good {
		t.Fatalf("%d certificates recorded, want %d", len(all), 1+rounds*good)
	}
	for _, ev := range checkChain(t, s, 1+rounds*good) {
		if ev.Detail == dupEvent.Detail {
			t.Fatalf("the rejected duplicate's audit event was recorded: %+v", ev)
		}
	}
}

func testAuditChain(t *testing.T, s store.Store) {
	var want []store.AuditEvent
	for i := range 5 {
		ev := store.AuditEvent{
			Time:   t0.Add(time.Duration(i) * time.Minute),
			Actor:  "admin:alice",
			Action: "intermediate.rotate",
			Detail: fmt.Sprintf("step %d", i),
			Seq:    100 + int64(i), // ignored by the store
		}
		if i == 2 {
			// Issuance events share the chain with the others.
			c := newCert("c0ffee", idWeb, "east", ev.Time, ev.Time.Add(time.Hour))
			ev = issueEvent(c)
			if err := s.RecordIssuance(t.Context(), c, ev); err != nil {
				t.Fatalf("RecordIssuance: %v", err)
			}
		} else if err := s.AppendAudit(t.Context(), ev); err != nil {
			t.Fatalf("AppendAudit %d: %v", i, err)
		}
		want = append(want, ev)
	}
	events := checkChain(t, s, len(want))
	for i := range want {
		checkEvent(t, events[i], want[i])
	}
}

func testAuditHead(t *testing.T, s store.Store) {
	hr, ok := s.(*closeOnce).Store.(store.AuditHeadReader)
	if !ok {
		t.Fatalf("%T does not implement store.AuditHeadReader", s)
	}
	head, err := hr.AuditHead(t.Context())
	if err != nil || head.Seq != 0 || head.Hash != nil {
		t.Fatalf("AuditHead of an empty log = %+v, %v; want the zero head", head, err)
	}
	for i := range 3 {
		if err := s.AppendAudit(t.Context(), store.AuditEvent{Time: t0, Actor: "admin:alice", Action: fmt.Sprintf("step.%d", i)}); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
	}
	events := checkChain(t, s, 3)
	head, err = hr.AuditHead(t.Context())
	if err != nil || head.Seq != 3 || !slices.Equal(head.Hash, events[2].Hash) {
		t.Fatalf("AuditHead = %+v, %v; want seq 3, hash %x", head, err, events[2].Hash)
	}
	if h, err := hr.AuditHashAt(t.Context(), 2); err != nil || !slices.Equal(h, events[1].Hash) {
		t.Fatalf("AuditHashAt(2) = %x, %v; want %x", h, err, events[1].Hash)
	}
	if _, err := hr.AuditHashAt(t.Context(), 4); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AuditHashAt(4) = %v, want ErrNotFound", err)
	}
}

func testAuditZeroTimeIsSet(t *testing.T, s store.Store) {
	if err := s.AppendAudit(t.Context(), store.AuditEvent{Actor: "admin:bob", Action: "bundle.publish"}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	c := newCert("5e7", idDB, "east", t0, t0.Add(time.Hour))
	if err := s.RecordIssuance(t.Context(), c, store.AuditEvent{Actor: "admin:bob", Action: "certificate.issue"}); err != nil {
		t.Fatalf("RecordIssuance: %v", err)
	}
	for _, ev := range checkChain(t, s, 2) {
		if ev.Time.IsZero() {
			t.Errorf("event %d: zero Time was stored as zero, want the store's now", ev.Seq)
		}
	}
}

func testAuditEventsSince(t *testing.T, s store.Store) {
	for i := range 3 {
		ev := store.AuditEvent{Time: t0.Add(time.Duration(i) * 10 * time.Second), Actor: "admin:carol", Action: fmt.Sprint("a", i)}
		if err := s.AppendAudit(t.Context(), ev); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
	}
	tests := []struct {
		name  string
		since time.Time
		want  []string
	}{
		{"zero is everything", time.Time{}, []string{"a0", "a1", "a2"}},
		{"inclusive", t0.Add(10 * time.Second), []string{"a1", "a2"}},
		{"fraction after a stored second", t0.Add(10*time.Second + time.Millisecond), []string{"a2"}},
		{"after the last", t0.Add(time.Minute), nil},
		{"other zone, same instant", t0.Add(20 * time.Second).In(time.FixedZone("X", -3*3600)), []string{"a2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := s.AuditEvents(t.Context(), tt.since)
			if err != nil {
				t.Fatalf("AuditEvents: %v", err)
			}
			var got []string
			for _, ev := range events {
				got = append(got, ev.Action)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("AuditEvents(%v) = %v, want %v", tt.since, got, tt.want)
			}
		})
	}
}

func testConcurrentRecordIssuance(t *testing.T, s store.Store) {
	const n = 32
	certs := make([]store.Certificate, n)
	for i := range n {
		certs[i] = newCert(fmt.Sprintf("cc%02x", i), idWeb, fmt.Sprint("cluster", i%3), t0, t0.Add(time.Hour))
	}
	errs := allAtOnce(n, func(i int) error {
		return s.RecordIssuance(t.Context(), certs[i], issueEvent(certs[i]))
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("RecordIssuance %d: %v", i, err)
		}
	}
	// Every successful call is visible as soon as it returned.
	for _, c := range certs {
		got, err := s.Certificate(t.Context(), c.Serial)
		if err != nil {
			t.Fatalf("Certificate(%s) after a successful RecordIssuance: %v", c.Serial, err)
		}
		checkCert(t, got, c)
	}
	events := checkChain(t, s, n)
	var gotSerials []string
	for _, ev := range events {
		gotSerials = append(gotSerials, ev.Serial)
	}
	slices.Sort(gotSerials)
	if want := serials(certs); !slices.Equal(gotSerials, want) {
		t.Fatalf("audited serials %v, want each of %v once", gotSerials, want)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c := newCert("ca9ce1", idWeb, "east", t0, t0.Add(time.Hour))
	if err := s.RecordIssuance(ctx, c, issueEvent(c)); err == nil {
		t.Fatal("RecordIssuance with a canceled context succeeded")
	}
	if err := s.AppendAudit(ctx, store.AuditEvent{Time: t0, Actor: "a", Action: "b"}); err == nil {
		t.Fatal("AppendAudit with a canceled context succeeded")
	}
	// An error means nothing was recorded.
	if _, err := s.Certificate(t.Context(), c.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Certificate after failed RecordIssuance = %v, want ErrNotFound", err)
	}
	checkChain(t, s, 0)
}

func testAfterClose(t *testing.T, s store.Store) {
	mustRecord(t, s, newCert("c105e", idWeb, "east", t0, t0.Add(time.Hour)))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c := newCert("1a7e", idWeb, "east", t0, t0.Add(time.Hour))
	ctx := t.Context()
	ops := map[string]func() error{
		"RecordIssuance": func() error { return s.RecordIssuance(ctx, c, issueEvent(c)) },
		"AppendAudit":    func() error { return s.AppendAudit(ctx, store.AuditEvent{Time: t0, Actor: "a", Action: "b"}) },
		"Certificate":    func() error { _, err := s.Certificate(ctx, "c105e"); return err },
		"Certificates":   func() error { _, err := s.Certificates(ctx, store.CertificateFilter{}); return err },
		"AuditEvents":    func() error { _, err := s.AuditEvents(ctx, time.Time{}); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// allAtOnce calls fn(i) for each i in [0, n), each in its own goroutine,
// all released together so that they race, and returns each call's error.
func allAtOnce(n int, fn func(i int) error) []error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}
