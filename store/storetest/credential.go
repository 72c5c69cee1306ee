package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
)

func credentialEvent(action, cluster, serial string) store.AuditEvent {
	return store.AuditEvent{Time: t0, Actor: "spiffe://" + tdEast + "/meshca/cluster/" + cluster, Action: action,
		Cluster: cluster, Serial: serial}
}

func checkCredential(t *testing.T, s store.RootStore, want store.ClusterCredential) {
	t.Helper()
	got, err := s.ClusterCredential(t.Context(), want.Cluster, want.Replica)
	if err != nil {
		t.Fatalf("ClusterCredential(%s): %v", want.Cluster, err)
	}
	if !got.SameState(want) || !got.Since.Equal(want.Since) || !got.Newest.Equal(want.Newest) ||
		!want.Since.IsZero() && got.Since.Location() != time.UTC || !want.Newest.IsZero() && got.Newest.Location() != time.UTC {
		t.Fatalf("ClusterCredential(%s) = %+v, want %+v", want.Cluster, got, want)
	}
	if got.UpdatedAt.IsZero() || got.UpdatedAt.Location() != time.UTC || got.UpdatedAt.Nanosecond() != 0 {
		t.Errorf("UpdatedAt %v, want a whole second in UTC", got.UpdatedAt)
	}
}

// testClusterCredentialSwap walks one lineage: enrolment (no record), a
// renewal, the first use of the new credential, a reuse that revokes the
// lineage, and a new enrolment; and checks that a swap from a stale state
// changes nothing.
func testClusterCredentialSwap(t *testing.T, s RootStoreUnderTest) {
	ctx := t.Context()
	mustAddCluster(t, s, "east", tdEast, "tok-east")
	if _, err := s.ClusterCredential(ctx, "east", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ClusterCredential before enrolment = %v, want ErrNotFound", err)
	}
	nb := func(m int) time.Time { return stored(t0.Add(time.Duration(m) * time.Minute)) }
	steps := []store.ClusterCredential{
		{Cluster: "east", Current: "0a", Newest: nb(0)},
		{Cluster: "east", Current: "0b", Previous: "0a", Newest: nb(1)},
		{Cluster: "east", Current: "0b", Previous: "0a", CurrentUsed: true, Newest: nb(1)},
		{Cluster: "east", Revoked: true, Newest: nb(1)},
		{Cluster: "east", Current: "0c", Newest: nb(2), Since: nb(1)},
		{Cluster: "east", Current: "0d", Previous: "0c", Newest: nb(3), Since: nb(1)},
	}
	var old store.ClusterCredential
	for i, next := range steps {
		if err := s.SwapClusterCredential(ctx, old, next, credentialEvent("credential.step", "east", next.Current)); err != nil {
			t.Fatalf("step %d: SwapClusterCredential(%+v -> %+v): %v", i, old, next, err)
		}
		checkCredential(t, s, next)
		// The state just replaced is stale: swapping from it again
		// writes nothing.
		stale := next
		stale.Current = "ff"
		err := s.SwapClusterCredential(ctx, old, stale, credentialEvent("credential.stale", "east", "ff"))
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("step %d: swap from a stale state = %v, want ErrConflict", i, err)
		}
		checkCredential(t, s, next)
		old = next
	}
	events := verifyChain(t, s, 1+len(steps))
	for _, ev := range events[1:] {
		if ev.Action != "credential.step" {
			t.Fatalf("audit event %+v written by a refused swap", ev)
		}
	}
}

func testClusterCredentialInvalid(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-east")
	for name, tc := range map[string][2]store.ClusterCredential{
		"no cluster":             {{}, {Current: "0a"}},
		"no current serial":      {{}, {Cluster: "east"}},
		"old of another cluster": {{Cluster: "west", Current: "0a"}, {Cluster: "east", Current: "0b"}},
	} {
		if err := s.SwapClusterCredential(t.Context(), tc[0], tc[1], credentialEvent("credential.bad", "east", "")); err == nil {
			t.Errorf("%s: SwapClusterCredential succeeded", name)
		}
	}
	verifyChain(t, s, 1)
}

// testConcurrentClusterCredentialSwap races swaps from one state, each to
// a successor of its own: enrolments of a cluster without a record, and
// renewals with one credential. Exactly one of each may win.
func testConcurrentClusterCredentialSwap(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-east")
	mustAddCluster(t, s, "west", tdWest, "tok-west")
	west := store.ClusterCredential{Cluster: "west", Current: "0a", CurrentUsed: true}
	if err := s.SwapClusterCredential(t.Context(), store.ClusterCredential{}, west, credentialEvent("credential.issue", "west", "0a")); err != nil {
		t.Fatal(err)
	}
	for _, from := range []store.ClusterCredential{{}, west} {
		cluster := cmp.Or(from.Cluster, "east")
		const n = 8
		errs := allAtOnce(n, func(i int) error {
			next := store.ClusterCredential{Cluster: cluster, Current: fmt.Sprintf("1%d", i), Previous: from.Current}
			return s.SwapClusterCredential(t.Context(), from, next, credentialEvent("credential.issue", cluster, next.Current))
		})
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("cluster %s: swaps %d and %d from one state both succeeded", cluster, won, i)
			case err == nil:
				won = i
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("cluster %s: swap %d = %v, want nil or ErrConflict", cluster, i, err)
			}
		}
		if won < 0 {
			t.Fatalf("cluster %s: none of %d concurrent swaps succeeded", cluster, n)
		}
		checkCredential(t, s, store.ClusterCredential{Cluster: cluster, Current: fmt.Sprintf("1%d", won), Previous: from.Current})
	}
	verifyChain(t, s, 2+1+2)
}

// testJoinTokenForReplicas: a token of more than one replica is redeemed
// any number of times until it expires and says how many replicas it
// admits; a one-time token still redeems once; a count out of range is
// refused and writes nothing.
func testJoinTokenForReplicas(t *testing.T, s RootStoreUnderTest) {
	ctx := t.Context()
	c := store.Cluster{Name: "east", TrustDomain: tdEast}
	tok := joinToken("east", "tok-east", t0.Add(time.Hour))
	tok.Replicas = 3
	if err := s.AddCluster(ctx, c, tok, adminEvent("cluster.add", "east", "3 replicas")); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		got, n, err := s.RedeemJoinToken(ctx, tok.Hash, t0.Add(time.Duration(i)*time.Minute), redeemEvent())
		if err != nil || got.Name != "east" || n != 3 {
			t.Fatalf("redemption %d = %+v, %d, %v; want cluster east, 3 replicas", i, got, n, err)
		}
	}
	if _, _, err := s.RedeemJoinToken(ctx, tok.Hash, t0.Add(time.Hour), redeemEvent()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("redemption at expiry = %v, want ErrNotFound", err)
	}
	once := joinToken("east", "tok-once", t0.Add(time.Hour))
	once.Replicas = 1
	if err := s.AddCluster(ctx, c, once, adminEvent("cluster.add", "east", "one-time")); err != nil {
		t.Fatal(err)
	}
	if _, n, err := s.RedeemJoinToken(ctx, once.Hash, t0, redeemEvent()); err != nil || n != 1 {
		t.Fatalf("one-time redemption = %d, %v; want 1 replica", n, err)
	}
	if _, _, err := s.RedeemJoinToken(ctx, once.Hash, t0, redeemEvent()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second one-time redemption = %v, want ErrNotFound", err)
	}
	for _, n := range []int{-1, store.MaxReplicas + 1} {
		bad := joinToken("east", fmt.Sprint("tok-bad", n), t0.Add(time.Hour))
		bad.Replicas = n
		if err := s.AddCluster(ctx, c, bad, adminEvent("cluster.add", "east", "bad")); err == nil {
			t.Fatalf("AddCluster with %d replicas accepted", n)
		}
	}
	verifyChain(t, s, 2+5+1)
}

// testClusterCredentialReplicas: the lineages of two replicas of one
// cluster are independent records, listed by replica; a swap of one leaves
// the other, and a swap that names another replica than its expected state
// is refused.
func testClusterCredentialReplicas(t *testing.T, s RootStoreUnderTest) {
	ctx := t.Context()
	mustAddCluster(t, s, "east", tdEast, "tok-east")
	nb := stored(t0)
	a := store.ClusterCredential{Cluster: "east", Replica: "east-0", Current: "0a", Newest: nb}
	b := store.ClusterCredential{Cluster: "east", Replica: "east-1", Current: "0b", Newest: nb}
	for _, c := range []store.ClusterCredential{a, b} {
		if err := s.SwapClusterCredential(ctx, store.ClusterCredential{}, c, credentialEvent("credential.issue", "east", c.Current)); err != nil {
			t.Fatalf("enrol %s: %v", c.Replica, err)
		}
	}
	// A second enrolment record of east-0 from "no record" conflicts.
	if err := s.SwapClusterCredential(ctx, store.ClusterCredential{}, a, credentialEvent("credential.issue", "east", "0a")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second first record of east-0 = %v, want ErrConflict", err)
	}
	a2 := a
	a2.Current, a2.Previous = "0c", "0a"
	if err := s.SwapClusterCredential(ctx, a, a2, credentialEvent("credential.renew", "east", "0c")); err != nil {
		t.Fatal(err)
	}
	checkCredential(t, s, a2)
	checkCredential(t, s, b)
	cross := b
	cross.Replica = "east-0"
	if err := s.SwapClusterCredential(ctx, b, cross, credentialEvent("credential.bad", "east", "0b")); err == nil {
		t.Fatal("swap from east-1's state into east-0's record accepted")
	}
	list, err := s.ClusterCredentials(ctx, "east")
	if err != nil || len(list) != 2 || list[0].Replica != "east-0" || list[1].Replica != "east-1" ||
		!list[0].SameState(a2) || !list[1].SameState(b) {
		t.Fatalf("ClusterCredentials = %+v, %v; want east-0 %+v and east-1 %+v", list, err, a2, b)
	}
	if list, err := s.ClusterCredentials(ctx, "west"); err != nil || len(list) != 0 {
		t.Fatalf("ClusterCredentials(west) = %+v, %v; want none", list, err)
	}
	verifyChain(t, s, 1+3)
}
