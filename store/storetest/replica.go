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
	PutJWTAuthority(ctx context.Context, a store.JWTAuthority) error
	JWTAuthorities(ctx context.Context, now time.Time) ([]store.JWTAuthority, error)
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

// testJWTAuthorities stores JWT authorities: a stored key keeps its
// cluster, trust domain, key and chain, and only its expiry moves, and only
// later; another cluster cannot take over its key ID; expired keys are not
// listed, and are dropped at the next write.
func testJWTAuthorities(t *testing.T, s RootStoreUnderTest) {
	rs := asReplicaStore(t, s)
	ctx := t.Context()
	now := time.Now()
	cert := testkit.Root(t, "jwt-authority-a", now, time.Hour).Certificate.Raw
	inter := testkit.Root(t, "jwt-authority-b", now, time.Hour).Certificate.Raw
	chain := [][]byte{cert, inter}
	put := func(kid, cluster, key string, expires time.Time) error {
		return rs.PutJWTAuthority(ctx, store.JWTAuthority{KeyID: kid, Cluster: cluster, TrustDomain: tdEast,
			PublicKey: []byte(key), Chain: chain, ExpiresAt: expires})
	}
	hour, later, gone := now.Add(time.Hour), now.Add(2*time.Hour), now.Add(-time.Minute)
	for _, c := range []struct {
		kid, cluster, key string
		expires           time.Time
		want              error
	}{
		{"k1", "east", "key1", hour, nil},
		{"k2", "west", "key2", hour, nil},
		{"k1", "east", "key1", hour, store.ErrAlreadyExists},
		{"k1", "east", "key1", now.Add(time.Minute), store.ErrAlreadyExists},
		{"k1", "west", "other", later, store.ErrAlreadyExists},
		{"k1", "east", "changed", later, nil},
		{"k3", "east", "key3", gone, nil},
	} {
		if err := put(c.kid, c.cluster, c.key, c.expires); !errors.Is(err, c.want) {
			t.Fatalf("PutJWTAuthority(%s, %s, %s) = %v, want %v", c.kid, c.cluster, c.expires, err, c.want)
		}
	}
	if err := put("k4", "east", "key4", time.Time{}); err == nil {
		t.Fatal("PutJWTAuthority without an expiry succeeded")
	}
	got, err := rs.JWTAuthorities(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].KeyID != "k1" || got[0].Cluster != "east" || string(got[0].PublicKey) != "key1" ||
		got[0].TrustDomain != tdEast || got[0].ExpiresAt.Unix() != later.Unix() ||
		got[1].KeyID != "k2" || got[1].Cluster != "west" || got[1].ExpiresAt.Unix() != hour.Unix() {
		t.Fatalf("JWTAuthorities = %+v", got)
	}
	if len(got[0].Chain) != 2 || !bytes.Equal(got[0].Chain[0], cert) || !bytes.Equal(got[0].Chain[1], inter) {
		t.Fatalf("chain came back as %d certificates, want the 2 stored", len(got[0].Chain))
	}
	if got, err := rs.JWTAuthorities(ctx, hour.Add(time.Second)); err != nil || len(got) != 1 || got[0].KeyID != "k1" {
		t.Fatalf("JWTAuthorities after k2 expired = %+v, %v; want k1 alone", got, err)
	}
}
