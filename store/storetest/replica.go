package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
)

// replicaStore is what root servers sharing one store need of it (see
// root.ReplicaStore).
type replicaStore interface {
	TryLeader(ctx context.Context) (store.Lease, bool, error)
	PutRootCRL(ctx context.Context, c store.RootCRL) error
	RootCRLs(ctx context.Context) ([]store.RootCRL, error)
	PutIssuerCRL(ctx context.Context, c store.IssuerCRL) error
	IssuerCRLs(ctx context.Context, now time.Time) ([]store.IssuerCRL, error)
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

// testIssuerCRLs stores issuer CRLs: one replaces the stored CRL of its
// issuer only with a higher number and only for the same cluster; the
// chain comes back as stored; CRLs of expired issuers are not listed, and
// are dropped at the next write.
func testIssuerCRLs(t *testing.T, s RootStoreUnderTest) {
	rs := asReplicaStore(t, s)
	ctx := t.Context()
	now := time.Now()
	inter := testkit.Root(t, "issuer-crl-a", now, time.Hour).Certificate.Raw
	root := testkit.Root(t, "issuer-crl-b", now, time.Hour).Certificate.Raw
	chain := [][]byte{inter, root}
	put := func(serial, cluster string, n int64, der string, notAfter time.Time) error {
		return rs.PutIssuerCRL(ctx, store.IssuerCRL{IssuerSerial: serial, Cluster: cluster, Number: n, DER: []byte(der),
			IssuerChain: chain, IssuerNotAfter: notAfter})
	}
	later, gone := now.Add(time.Hour), now.Add(-time.Minute)
	for _, c := range []struct {
		serial, cluster string
		n               int64
		der             string
		notAfter        time.Time
		want            error
	}{
		{"0a", "east", 10, "a10", later, nil},
		{"0b", "west", 5, "b5", later, nil},
		{"0a", "east", 10, "a10-other", later, store.ErrAlreadyExists},
		{"0a", "east", 9, "a9", later, store.ErrAlreadyExists},
		{"0a", "west", 12, "a12-west", later, store.ErrAlreadyExists},
		{"0a", "east", 11, "a11", later, nil},
		{"0c", "east", 1, "c1", gone, nil},
	} {
		if err := put(c.serial, c.cluster, c.n, c.der, c.notAfter); !errors.Is(err, c.want) {
			t.Fatalf("PutIssuerCRL(%s, %s, %d) = %v, want %v", c.serial, c.cluster, c.n, err, c.want)
		}
	}
	if err := put("0d", "east", 0, "d0", later); err == nil {
		t.Fatal("PutIssuerCRL with number 0 succeeded")
	}
	got, err := rs.IssuerCRLs(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].IssuerSerial != "0a" || got[0].Number != 11 || string(got[0].DER) != "a11" ||
		got[0].Cluster != "east" || got[1].IssuerSerial != "0b" || got[1].Number != 5 ||
		got[0].IssuerNotAfter.Unix() != later.Unix() {
		t.Fatalf("IssuerCRLs = %+v", got)
	}
	if len(got[0].IssuerChain) != 2 || !bytes.Equal(got[0].IssuerChain[0], inter) || !bytes.Equal(got[0].IssuerChain[1], root) {
		t.Fatalf("issuer chain came back as %d certificates, want the 2 stored", len(got[0].IssuerChain))
	}
}
