package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/meshca/meshca/store"
)

// replicaStore is what root servers sharing one store need of it (see
// root.ReplicaStore).
type replicaStore interface {
	TryLeader(ctx context.Context) (store.Lease, bool, error)
	PutRootCRL(ctx context.Context, c store.RootCRL) error
	RootCRLs(ctx context.Context) ([]store.RootCRL, error)
}

func asReplicaStore(t *testing.T, s RootStoreUnderTest) replicaStore {
	t.Helper()
	if c, ok := s.(*rootCloseOnce); ok {
		s = c.RootStoreUnderTest
	}
	rs, ok := s.(replicaStore)
	if !ok {
		t.Fatalf("%T has no leader lease or root CRLs", s)
	}
	return rs
}

// testLeaderLease takes the lease, sees a second taker refused while it is
// held, and taken again once released.
func testLeaderLease(t *testing.T, s RootStoreUnderTest) {
	rs := asReplicaStore(t, s)
	ctx := t.Context()
	first, ok, err := rs.TryLeader(ctx)
	if err != nil || !ok {
		t.Fatalf("TryLeader on a free lease = %v, %v", ok, err)
	}
	if err := first.Held(ctx); err != nil {
		t.Fatalf("Held: %v", err)
	}
	if _, ok, err := rs.TryLeader(ctx); err != nil || ok {
		t.Fatalf("TryLeader while held = %v, %v; want refused", ok, err)
	}
	first.Release()
	first.Release()
	second, ok, err := rs.TryLeader(ctx)
	if err != nil || !ok {
		t.Fatalf("TryLeader once released = %v, %v", ok, err)
	}
	second.Release()
}

// testRootCRLs stores root CRLs: one replaces the stored CRL of its root
// only with a higher number.
func testRootCRLs(t *testing.T, s RootStoreUnderTest) {
	rs := asReplicaStore(t, s)
	ctx := t.Context()
	put := func(fp string, n int64, der string) error {
		return rs.PutRootCRL(ctx, store.RootCRL{RootFingerprint: fp, Number: n, DER: []byte(der)})
	}
	for _, c := range []struct {
		fp   string
		n    int64
		der  string
		want error
	}{
		{"aa", 10, "a10", nil},
		{"bb", 5, "b5", nil},
		{"aa", 10, "a10-other", store.ErrAlreadyExists},
		{"aa", 9, "a9", store.ErrAlreadyExists},
		{"aa", 11, "a11", nil},
	} {
		if err := put(c.fp, c.n, c.der); !errors.Is(err, c.want) {
			t.Fatalf("PutRootCRL(%s, %d) = %v, want %v", c.fp, c.n, err, c.want)
		}
	}
	if err := put("cc", 0, "c0"); err == nil {
		t.Fatal("PutRootCRL with number 0 succeeded")
	}
	got, err := rs.RootCRLs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RootFingerprint != "aa" || got[0].Number != 11 || string(got[0].DER) != "a11" ||
		got[1].RootFingerprint != "bb" || got[1].Number != 5 || string(got[1].DER) != "b5" {
		t.Fatalf("RootCRLs = %+v", got)
	}
}
