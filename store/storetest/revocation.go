package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
)

// RevocationStoreUnderTest is a backend's store as RunRevocationStore tests
// it: the RevocationStore contract, plus the Store contract for reading back
// the audit events its writes append.
type RevocationStoreUnderTest interface {
	store.Store
	store.RevocationStore
}

// RunRevocationStore runs the store.RevocationStore suite. open must return
// a new, empty store for the calling sub-test, as for Run;
// RunRevocationStore closes it when the sub-test ends, so open must not.
func RunRevocationStore(t *testing.T, open func(t *testing.T) RevocationStoreUnderTest) {
	runCases(t, open, func(s RevocationStoreUnderTest) RevocationStoreUnderTest {
		return &revocationCloseOnce{RevocationStoreUnderTest: s}
	}, []testCase[RevocationStoreUnderTest]{
		{"RevokeThenList", testRevokeThenList},
		{"RevokedAtZeroIsSet", testRevokedAtZeroIsSet},
		{"RevokeInForce", testRevokeInForce},
		{"Unrevoke", testUnrevoke},
		{"UnrevokeNone", testUnrevokeNone},
		{"RevokeAgainAfterUnrevoke", testRevokeAgainAfterUnrevoke},
		{"UnrevokeKeepsCertificatesRevoked", testUnrevokeKeepsCertificatesRevoked},
		{"ExpiredNotLifted", testExpiredNotLifted},
		{"RevocationsAt", testRevocationsAt},
		{"InvalidRevocation", testInvalidRevocation},
		{"AllKinds", testAllKinds},
		{"ConcurrentRevoke", testConcurrentRevoke},
		{"ChainWithConcurrentIssuance", testRevocationChainWithConcurrentIssuance},
		{"AfterClose", testRevocationAfterClose},
	})
}

// revocationCloseOnce is closeOnce for a RevocationStoreUnderTest.
type revocationCloseOnce struct {
	RevocationStoreUnderTest
	onceCloser
}

func (c *revocationCloseOnce) Close() error { return c.close(c.RevocationStoreUnderTest.Close) }

func newRevocation(kind, value string) store.Revocation {
	return store.Revocation{
		Kind:      kind,
		Value:     value,
		Cluster:   "east",
		Reason:    "key compromise",
		RevokedBy: "admin:alice",
		RevokedAt: t0,
	}
}

func revokeEvent(r store.Revocation) store.AuditEvent {
	return store.AuditEvent{Time: t0, Actor: r.RevokedBy, Action: "revocation.add", Cluster: r.Cluster,
		Detail: r.Kind + " " + r.Value}
}

func unrevokeEvent(kind, value string) store.AuditEvent {
	return store.AuditEvent{Time: t0, Actor: "admin:bob", Action: "revocation.lift", Detail: kind + " " + value}
}

func mustRevoke(t *testing.T, s store.RevocationStore, r store.Revocation) store.Revocation {
	t.Helper()
	got, err := s.Revoke(t.Context(), r, revokeEvent(r))
	if err != nil {
		t.Fatalf("Revoke(%s %s): %v", r.Kind, r.Value, err)
	}
	return got
}

func mustUnrevoke(t *testing.T, s store.RevocationStore, kind, value string) {
	t.Helper()
	if err := s.Unrevoke(t.Context(), kind, value, unrevokeEvent(kind, value)); err != nil {
		t.Fatalf("Unrevoke(%s %s): %v", kind, value, err)
	}
}

// wantStoredRevocation is r as the contract stores it: times at whole
// seconds in UTC, a zero ExpiresAt kept zero.
func wantStoredRevocation(r store.Revocation) store.Revocation {
	r.RevokedAt = stored(r.RevokedAt)
	if !r.ExpiresAt.IsZero() {
		r.ExpiresAt = stored(r.ExpiresAt)
	}
	return r
}

// checkRevocation compares got with want as stored, and, when want.ID is
// zero, only checks that got has an ID.
func checkRevocation(t *testing.T, got, want store.Revocation) {
	t.Helper()
	want = wantStoredRevocation(want)
	if want.ID == 0 {
		if got.ID <= 0 {
			t.Errorf("revocation %s %s: ID %d, want one assigned", got.Kind, got.Value, got.ID)
		}
		want.ID = got.ID
	}
	if got.ID != want.ID || got.Kind != want.Kind || got.Value != want.Value || got.Cluster != want.Cluster ||
		got.Reason != want.Reason || got.RevokedBy != want.RevokedBy ||
		!got.RevokedAt.Equal(want.RevokedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		got.ExpiresAt.IsZero() != want.ExpiresAt.IsZero() {
		t.Errorf("revocation mismatch\n got %+v\nwant %+v", got, want)
	}
	if got.RevokedAt.Location() != time.UTC || (!got.ExpiresAt.IsZero() && got.ExpiresAt.Location() != time.UTC) {
		t.Errorf("revocation %s %s: times not in UTC: %v, %v", got.Kind, got.Value, got.RevokedAt, got.ExpiresAt)
	}
}

// checkRevocations lists the entries in force at now and compares them,
// in order, with want.
func checkRevocations(t *testing.T, s store.RevocationStore, now time.Time, want ...store.Revocation) {
	t.Helper()
	got, err := s.Revocations(t.Context(), now)
	if err != nil {
		t.Fatalf("Revocations: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("Revocations(%v) = %v, want %v", now, revocationValues(got), revocationValues(want))
	}
	for i := range want {
		checkRevocation(t, got[i], want[i])
	}
}

func revocationValues(rs []store.Revocation) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Kind + " " + r.Value
	}
	return out
}

func testRevokeThenList(t *testing.T, s RevocationStoreUnderTest) {
	if got, err := s.Revocations(t.Context(), t0); err != nil || len(got) != 0 {
		t.Fatalf("Revocations on an empty store = %v, %v; want none", got, err)
	}
	zone := time.FixedZone("UTC-5", -5*3600)
	serial := newRevocation(store.RevokeSerial, "0a1b2c")
	serial.RevokedAt = t0.Add(750 * time.Millisecond).In(zone)
	serial.ExpiresAt = t0.Add(90*24*time.Hour + 999*time.Millisecond).In(zone)
	id := newRevocation(store.RevokeSPIFFEID, idWeb)
	id.Cluster, id.Reason = "", "" // optional fields stay empty
	ev := revokeEvent(serial)
	ev.Seq = 42 // ignored by the store

	first, err := s.Revoke(t.Context(), serial, ev)
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	checkRevocation(t, first, serial)
	second := mustRevoke(t, s, id)
	checkRevocation(t, second, id)
	if second.ID <= first.ID {
		t.Errorf("second ID %d not after first ID %d", second.ID, first.ID)
	}
	checkRevocations(t, s, t0, first, second)
	events := verifyChain(t, s, 2)
	checkEvent(t, events[0], ev)
	checkEvent(t, events[1], revokeEvent(id))
}

func testRevokedAtZeroIsSet(t *testing.T, s RevocationStoreUnderTest) {
	r := newRevocation(store.RevokeCluster, "west")
	r.RevokedAt = time.Time{}
	got := mustRevoke(t, s, r)
	if got.RevokedAt.IsZero() || got.RevokedAt.Nanosecond() != 0 || got.RevokedAt.Location() != time.UTC {
		t.Fatalf("RevokedAt = %v, want the store's now at a whole second in UTC", got.RevokedAt)
	}
	r.RevokedAt = got.RevokedAt
	checkRevocations(t, s, t0, r)
}

func testRevokeInForce(t *testing.T, s RevocationStoreUnderTest) {
	orig := mustRevoke(t, s, newRevocation(store.RevokeSerial, "0a1b2c"))
	dup := newRevocation(store.RevokeSerial, "0a1b2c")
	dup.Reason, dup.RevokedBy, dup.ExpiresAt = "superseded", "admin:carol", t0.Add(time.Hour)
	if _, err := s.Revoke(t.Context(), dup, revokeEvent(dup)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Revoke(in force) = %v, want ErrAlreadyExists", err)
	}
	// Nothing was written: the entry is unchanged and no event was appended.
	checkRevocations(t, s, t0, orig)
	verifyChain(t, s, 1)
}

func testUnrevoke(t *testing.T, s RevocationStoreUnderTest) {
	mustRevoke(t, s, newRevocation(store.RevokeSerial, "aa"))
	b := mustRevoke(t, s, newRevocation(store.RevokeSerial, "bb"))
	c := mustRevoke(t, s, newRevocation(store.RevokeSPIFFEID, "aa")) // same value, other kind
	ev := unrevokeEvent(store.RevokeSerial, "aa")
	if err := s.Unrevoke(t.Context(), store.RevokeSerial, "aa", ev); err != nil {
		t.Fatalf("Unrevoke: %v", err)
	}
	checkRevocations(t, s, t0, b, c)
	events := verifyChain(t, s, 4)
	checkEvent(t, events[3], ev)
}

func testUnrevokeNone(t *testing.T, s RevocationStoreUnderTest) {
	if err := s.Unrevoke(t.Context(), store.RevokeSerial, "aa", unrevokeEvent(store.RevokeSerial, "aa")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Unrevoke(never revoked) = %v, want ErrNotFound", err)
	}
	verifyChain(t, s, 0)
	r := mustRevoke(t, s, newRevocation(store.RevokeSerial, "aa"))
	tests := []struct{ name, kind, value string }{
		{"other value", store.RevokeSerial, "bb"},
		{"other kind", store.RevokeIntermediate, "aa"},
		{"value differs in case", store.RevokeSerial, "AA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Unrevoke(t.Context(), tt.kind, tt.value, unrevokeEvent(tt.kind, tt.value))
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Unrevoke(%s %s) = %v, want ErrNotFound", tt.kind, tt.value, err)
			}
		})
	}
	checkRevocations(t, s, t0, r)
	verifyChain(t, s, 1)
	mustUnrevoke(t, s, store.RevokeSerial, "aa")
	if err := s.Unrevoke(t.Context(), store.RevokeSerial, "aa", unrevokeEvent(store.RevokeSerial, "aa")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Unrevoke = %v, want ErrNotFound", err)
	}
	verifyChain(t, s, 2)
}

func testRevokeAgainAfterUnrevoke(t *testing.T, s RevocationStoreUnderTest) {
	first := mustRevoke(t, s, newRevocation(store.RevokeSPIFFEID, idWeb))
	other := mustRevoke(t, s, newRevocation(store.RevokeSPIFFEID, idDB))
	mustUnrevoke(t, s, store.RevokeSPIFFEID, idWeb)
	checkRevocations(t, s, t0, other)

	again := newRevocation(store.RevokeSPIFFEID, idWeb)
	again.Cluster, again.Reason, again.RevokedBy = "west", "compromised again", "admin:carol"
	again.RevokedAt, again.ExpiresAt = t0.Add(time.Hour), t0.Add(48*time.Hour)
	got := mustRevoke(t, s, again)
	checkRevocation(t, got, again)
	// IDs only grow: the entry in force again has a new one.
	if got.ID <= other.ID || got.ID <= first.ID {
		t.Errorf("ID after revoking again = %d, want more than %d and %d", got.ID, first.ID, other.ID)
	}
	checkRevocations(t, s, t0, other, got)
	// It is in force like any other: once more is refused, lifting works.
	if _, err := s.Revoke(t.Context(), again, revokeEvent(again)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Revoke(in force again) = %v, want ErrAlreadyExists", err)
	}
	mustUnrevoke(t, s, store.RevokeSPIFFEID, idWeb)
	checkRevocations(t, s, t0, other)
	verifyChain(t, s, 5)
}

// testUnrevokeKeepsCertificatesRevoked: lifting a SPIFFE ID revocation lets
// the identity get new certificates but keeps those it had revoked, by
// serial, until they expire; revoking and lifting again adds the ones
// issued meanwhile. Unrevoke uses the store's real clock for "expired", so
// the certificates here expire long before or long after any plausible now.
func testUnrevokeKeepsCertificatesRevoked(t *testing.T, s RevocationStoreUnderTest) {
	far := t0.AddDate(100, 0, 0)
	live := newCert("c1", idWeb, "east", t0, far)
	mustRecord(t, s, live,
		newCert("c2", idWeb, "east", t0.Add(-2*time.Hour), t0.Add(-time.Hour)), // expired
		newCert("c3", idWeb, "west", t0, far),                                  // another cluster
		newCert("c4", idDB, "east", t0, far),                                   // another identity
		newCert("c5", idWeb, "east", t0, far))
	// c5 is revoked on its own, c1 was and is no longer.
	pinned := newRevocation(store.RevokeSerial, "c5")
	pinned.Reason, pinned.ExpiresAt = "superseded", far
	pinned = mustRevoke(t, s, pinned)
	mustRevoke(t, s, newRevocation(store.RevokeSerial, "c1"))
	mustUnrevoke(t, s, store.RevokeSerial, "c1")

	id := mustRevoke(t, s, newRevocation(store.RevokeSPIFFEID, idWeb))
	mustUnrevoke(t, s, store.RevokeSPIFFEID, idWeb)
	kept := func(c store.Certificate, by store.Revocation) store.Revocation {
		return store.Revocation{Kind: store.RevokeSerial, Value: c.Serial, Cluster: c.Cluster, Reason: by.Reason,
			RevokedBy: by.RevokedBy, RevokedAt: by.RevokedAt, ExpiresAt: c.NotAfter}
	}
	checkRevocations(t, s, t0, pinned, kept(live, id))
	got, err := s.Revocations(t.Context(), t0)
	if err != nil {
		t.Fatal(err)
	}
	keptLive := got[1]
	if keptLive.ID <= id.ID {
		t.Errorf("kept revocation ID %d, want more than the lifted one's %d", keptLive.ID, id.ID)
	}

	// A certificate issued after the lift is not revoked ...
	fresh := newCert("c6", idWeb, "east", t0.Add(time.Hour), far)
	mustRecord(t, s, fresh)
	checkRevocations(t, s, t0, pinned, keptLive)
	// ... until the identity is revoked again; lifting that keeps it too,
	// and leaves the entries already in force as they are.
	again := newRevocation(store.RevokeSPIFFEID, idWeb)
	again.Reason, again.RevokedBy, again.RevokedAt = "compromised again", "admin:carol", t0.Add(2*time.Hour)
	again = mustRevoke(t, s, again)
	mustUnrevoke(t, s, store.RevokeSPIFFEID, idWeb)
	checkRevocations(t, s, t0, pinned, keptLive, kept(fresh, again))
	got, err = s.Revocations(t.Context(), t0)
	if err != nil {
		t.Fatal(err)
	}
	keptFresh := got[2]

	// A revocation of every cluster's certificates (no Cluster) keeps the
	// other cluster's certificate revoked as well.
	global := newRevocation(store.RevokeSPIFFEID, idWeb)
	global.Cluster = ""
	global = mustRevoke(t, s, global)
	mustUnrevoke(t, s, store.RevokeSPIFFEID, idWeb)
	checkRevocations(t, s, t0, pinned, keptLive, keptFresh, kept(newCert("c3", idWeb, "west", t0, far), global))
	verifyChain(t, s, 6+3+3*2)
}

// testExpiredNotLifted: for Revoke and Unrevoke an entry is in force until it
// is lifted, whatever its ExpiresAt; only Revocations leaves it out.
func testExpiredNotLifted(t *testing.T, s RevocationStoreUnderTest) {
	old := newRevocation(store.RevokeSerial, "0a")
	old.ExpiresAt = t0.Add(-time.Hour)
	old = mustRevoke(t, s, old)
	checkRevocations(t, s, t0)
	checkRevocations(t, s, t0.Add(-2*time.Hour), old)
	again := newRevocation(store.RevokeSerial, "0a")
	again.Reason = "revoked again"
	if _, err := s.Revoke(t.Context(), again, revokeEvent(again)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Revoke(expired, not lifted) = %v, want ErrAlreadyExists", err)
	}
	mustUnrevoke(t, s, store.RevokeSerial, "0a")
	checkRevocations(t, s, t0.Add(-2*time.Hour))
	got := mustRevoke(t, s, again)
	checkRevocation(t, got, again)
	checkRevocations(t, s, t0, got)
	verifyChain(t, s, 3)
}

func testRevocationsAt(t *testing.T, s RevocationStoreUnderTest) {
	h, half := time.Hour, 500*time.Millisecond
	expiring := func(value string, expires time.Time) store.Revocation {
		r := newRevocation(store.RevokeSerial, value)
		r.RevokedAt, r.ExpiresAt = t0.Add(-48*h), expires
		return r
	}
	rs := []store.Revocation{
		expiring("never", time.Time{}),
		expiring("past", t0.Add(-h)),
		expiring("at-t0", t0),
		expiring("fraction", t0.Add(half)), // stored as t0
		expiring("future", t0.Add(h)),
	}
	for i := range rs {
		rs[i] = mustRevoke(t, s, rs[i])
	}
	never, atT0, fraction, future := rs[0], rs[2], rs[3], rs[4]
	tests := []struct {
		name string
		now  time.Time
		want []store.Revocation
	}{
		{"long before", t0.Add(-24 * h), rs},
		{"just before the past one expires", t0.Add(-h - half), rs},
		{"at expiry, excluded", t0.Add(-h), []store.Revocation{never, atT0, fraction, future}},
		{"half a second before stored t0", t0.Add(-half), []store.Revocation{never, atT0, fraction, future}},
		{"at t0", t0, []store.Revocation{never, future}},
		{"between", t0.Add(h / 2), []store.Revocation{never, future}},
		{"after all", t0.Add(24 * h), []store.Revocation{never}},
		{"far future, zero ExpiresAt stays", t0.AddDate(100, 0, 0), []store.Revocation{never}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRevocations(t, s, tt.now, tt.want...)
		})
	}
}

func testInvalidRevocation(t *testing.T, s RevocationStoreUnderTest) {
	valid := newRevocation(store.RevokeSerial, "0a")
	tests := []struct {
		name   string
		change func(r *store.Revocation)
	}{
		{"empty kind", func(r *store.Revocation) { r.Kind = "" }},
		{"unknown kind", func(r *store.Revocation) { r.Kind = "crl" }},
		{"kind in upper case", func(r *store.Revocation) { r.Kind = "Serial" }},
		{"empty value", func(r *store.Revocation) { r.Value = "" }},
		{"empty RevokedBy", func(r *store.Revocation) { r.RevokedBy = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid
			tt.change(&r)
			_, err := s.Revoke(t.Context(), r, revokeEvent(r))
			if err == nil || errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("Revoke(%+v) = %v, want a validation error", r, err)
			}
		})
	}
	for _, kind := range []string{"", "crl"} {
		err := s.Unrevoke(t.Context(), kind, "0a", unrevokeEvent(kind, "0a"))
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Unrevoke(kind %q) = %v, want a validation error", kind, err)
		}
	}
	if err := s.Unrevoke(t.Context(), store.RevokeSerial, "", unrevokeEvent(store.RevokeSerial, "")); err == nil {
		t.Error("Unrevoke(empty value) succeeded")
	}
	checkRevocations(t, s, t0)
	verifyChain(t, s, 0)
}

func testAllKinds(t *testing.T, s RevocationStoreUnderTest) {
	kinds := []string{store.RevokeSerial, store.RevokeSPIFFEID, store.RevokeCluster, store.RevokeIntermediate}
	var want []store.Revocation
	for _, kind := range kinds {
		// One value for every kind: the kind is part of the entry's key.
		want = append(want, mustRevoke(t, s, newRevocation(kind, "east")))
	}
	checkRevocations(t, s, t0, want...)
	for _, kind := range kinds {
		mustUnrevoke(t, s, kind, "east")
	}
	checkRevocations(t, s, t0)
	verifyChain(t, s, 2*len(kinds))
}

func testConcurrentRevoke(t *testing.T, s RevocationStoreUnderTest) {
	const n = 8
	got := make([]store.Revocation, n)
	errs := allAtOnce(n, func(i int) error {
		r := newRevocation(store.RevokeSerial, "0a1b2c")
		r.Reason = fmt.Sprint("attempt ", i)
		var err error
		got[i], err = s.Revoke(t.Context(), r, revokeEvent(r))
		return err
	})
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("Revoke %d and %d of one serial both succeeded", winner, i)
			}
			winner = i
		case !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("Revoke %d = %v, want nil or ErrAlreadyExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("none of %d concurrent revocations of one serial succeeded", n)
	}
	checkRevocations(t, s, t0, got[winner])
	verifyChain(t, s, 1)
}

// testRevocationChainWithConcurrentIssuance mixes revocations and lifts with
// concurrent issuances: the chain stays whole and gapless.
func testRevocationChainWithConcurrentIssuance(t *testing.T, s RevocationStoreUnderTest) {
	const issuances, rounds = 24, 4
	var writes []func() error
	for r := range rounds {
		writes = append(writes, func() error {
			rev := newRevocation(store.RevokeSerial, fmt.Sprintf("mix%02x", r))
			_, err := s.Revoke(t.Context(), rev, revokeEvent(rev))
			return errors.Join(err, s.Unrevoke(t.Context(), rev.Kind, rev.Value, unrevokeEvent(rev.Kind, rev.Value)))
		}, func() error {
			rev := newRevocation(store.RevokeSPIFFEID, fmt.Sprint(idDB, r))
			_, err := s.Revoke(t.Context(), rev, revokeEvent(rev))
			return err
		})
	}
	writeWithIssuances(t, s, issuances, writes,
		map[string]int{"certificate.issue": issuances, "revocation.add": 2 * rounds, "revocation.lift": rounds})
	got, err := s.Revocations(t.Context(), t0)
	if err != nil {
		t.Fatalf("Revocations: %v", err)
	}
	kinds := make([]string, len(got))
	for i, r := range got {
		kinds[i] = r.Kind
	}
	if want := slices.Repeat([]string{store.RevokeSPIFFEID}, rounds); !slices.Equal(kinds, want) {
		t.Errorf("kinds in force = %v, want %v", kinds, want)
	}
}

func testRevocationAfterClose(t *testing.T, s RevocationStoreUnderTest) {
	mustRevoke(t, s, newRevocation(store.RevokeSerial, "0a"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := t.Context()
	r := newRevocation(store.RevokeSerial, "0b")
	ops := map[string]func() error{
		"Revoke": func() error { _, err := s.Revoke(ctx, r, revokeEvent(r)); return err },
		"Unrevoke": func() error {
			return s.Unrevoke(ctx, store.RevokeSerial, "0a", unrevokeEvent(store.RevokeSerial, "0a"))
		},
		"Revocations": func() error { _, err := s.Revocations(ctx, t0); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}
