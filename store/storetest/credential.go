package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"sync"
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
	got, err := s.ClusterCredential(t.Context(), want.Cluster)
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
	if _, err := s.ClusterCredential(ctx, "east"); !errors.Is(err, store.ErrNotFound) {
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
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				<-start
				next := store.ClusterCredential{Cluster: cluster, Current: fmt.Sprintf("1%d", i), Previous: from.Current}
				errs[i] = s.SwapClusterCredential(t.Context(), from, next, credentialEvent("credential.issue", cluster, next.Current))
			})
		}
		close(start)
		wg.Wait()
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
