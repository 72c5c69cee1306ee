package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
)

// RootStoreUnderTest is a backend's store as RunRootStore tests it: the
// RootStore contract, plus the Store contract for reading back the audit
// events that RootStore writes append.
type RootStoreUnderTest interface {
	store.Store
	store.RootStore
	store.StandaloneRootStore
}

// chainVerifier is implemented by backends that can verify their own chain
// (with checks beyond the events, such as PostgreSQL's recorded head).
type chainVerifier interface {
	VerifyAuditChain(ctx context.Context) error
}

// RunRootStore runs the store.RootStore suite. open must return a new, empty
// store for the calling sub-test, as for Run; RunRootStore closes it when
// the sub-test ends, so open must not.
func RunRootStore(t *testing.T, open func(t *testing.T) RootStoreUnderTest) {
	runCases(t, open, func(s RootStoreUnderTest) RootStoreUnderTest {
		return &rootCloseOnce{RootStoreUnderTest: s}
	}, []testCase[RootStoreUnderTest]{
		{"AddClusterThenCluster", testAddClusterThenCluster},
		{"AddClusterAgainSameTrustDomain", testAddClusterAgainSameTrustDomain},
		{"AddClusterOtherTrustDomain", testAddClusterOtherTrustDomain},
		{"ClusterNotFound", testClusterNotFound},
		{"ClusterDNSNames", testClusterDNSNames},
		{"Clusters", testClusters},
		{"RedeemJoinToken", testRedeemJoinToken},
		{"RedeemJoinTokenRefused", testRedeemJoinTokenRefused},
		{"ConcurrentRedeemJoinToken", testConcurrentRedeemJoinToken},
		{"JoinTokenForReplicas", testJoinTokenForReplicas},
		{"Intermediates", testIntermediates},
		{"DuplicateIntermediate", testDuplicateIntermediate},
		{"Roots", testRoots},
		{"DuplicateRoot", testDuplicateRoot},
		{"ChainWithConcurrentIssuance", testRootChainWithConcurrentIssuance},
		{"AfterClose", testRootAfterClose},
		{"ClusterCredentialSwap", testClusterCredentialSwap},
		{"ClusterCredentialInvalid", testClusterCredentialInvalid},
		{"ConcurrentClusterCredentialSwap", testConcurrentClusterCredentialSwap},
		{"ClusterCredentialReplicas", testClusterCredentialReplicas},
		{"PinStandaloneRoot", testPinStandaloneRoot},
		{"ConcurrentPinStandaloneRoot", testConcurrentPinStandaloneRoot},
		{"LeaderLease", testLeaderLease},
		{"RootCRLs", testRootCRLs},
		{"IssuerCRLs", testIssuerCRLs},
		{"JWTAuthorities", testJWTAuthorities},
	})
}

// rootCloseOnce is closeOnce for a RootStoreUnderTest.
type rootCloseOnce struct {
	RootStoreUnderTest
	onceCloser
}

func (c *rootCloseOnce) Close() error { return c.close(c.RootStoreUnderTest.Close) }

const (
	tdEast = "east.example.org"
	tdWest = "west.example.org"
)

// tokenHash is the stored form of a join token.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func joinToken(cluster, token string, expires time.Time) store.JoinToken {
	return store.JoinToken{Hash: tokenHash(token), Cluster: cluster, ExpiresAt: expires}
}

func adminEvent(action, cluster, detail string) store.AuditEvent {
	return store.AuditEvent{Time: t0, Actor: "admin:alice", Action: action, Cluster: cluster, Detail: detail}
}

func redeemEvent() store.AuditEvent {
	// No Cluster: the store fills it in.
	return store.AuditEvent{Time: t0, Actor: "system:serviceaccount:meshca:issuer", Action: "cluster.join"}
}

func mustAddCluster(t *testing.T, s store.RootStore, name, td, token string) {
	t.Helper()
	c := store.Cluster{Name: name, TrustDomain: td}
	tok := joinToken(name, token, t0.Add(time.Hour))
	if err := s.AddCluster(t.Context(), c, tok, adminEvent("cluster.add", name, token)); err != nil {
		t.Fatalf("AddCluster(%s, %s): %v", name, td, err)
	}
}

// verifyChain checks the whole audit log as checkChain does, and also with
// the backend's own verification when it has one.
func verifyChain(t *testing.T, s store.Store, n int) []store.AuditEvent {
	t.Helper()
	events := checkChain(t, s, n)
	if v, ok := s.(chainVerifier); ok {
		if err := v.VerifyAuditChain(t.Context()); err != nil {
			t.Fatalf("VerifyAuditChain: %v", err)
		}
	}
	return events
}

func checkCluster(t *testing.T, got store.Cluster, name, td string) {
	t.Helper()
	if got.Name != name || got.TrustDomain != td {
		t.Errorf("cluster = %+v, want name %s, trust domain %s", got, name, td)
	}
	if got.CreatedAt.IsZero() || got.CreatedAt.Location() != time.UTC || got.CreatedAt.Nanosecond() != 0 {
		t.Errorf("cluster %s: CreatedAt %v, want a whole second in UTC", got.Name, got.CreatedAt)
	}
}

func testAddClusterThenCluster(t *testing.T, s RootStoreUnderTest) {
	ev := adminEvent("cluster.add", "east", "token for east")
	ev.Seq = 42 // ignored by the store
	tok := joinToken("east", "tok-east", t0.Add(time.Hour))
	if err := s.AddCluster(t.Context(), store.Cluster{Name: "east", TrustDomain: tdEast}, tok, ev); err != nil {
		t.Fatalf("AddCluster: %v", err)
	}
	got, err := s.Cluster(t.Context(), "east")
	if err != nil {
		t.Fatalf("Cluster: %v", err)
	}
	checkCluster(t, got, "east", tdEast)
	events := verifyChain(t, s, 1)
	checkEvent(t, events[0], ev)
	// The token was stored for the cluster.
	if c, _, err := s.RedeemJoinToken(t.Context(), tok.Hash, t0, redeemEvent()); err != nil || c.Name != "east" {
		t.Fatalf("RedeemJoinToken = %+v, %v; want cluster east", c, err)
	}
}

// clusterLister is the backends' listing of registered clusters, which the
// root's admin Status and bundle read.
type clusterLister interface {
	Clusters(ctx context.Context) ([]store.Cluster, error)
}

func testClusters(t *testing.T, s RootStoreUnderTest) {
	var inner any = s
	if w, ok := s.(*rootCloseOnce); ok {
		inner = w.RootStoreUnderTest
	}
	l, ok := inner.(clusterLister)
	if !ok {
		t.Fatal("the store cannot list its clusters")
	}
	if cs, err := l.Clusters(t.Context()); err != nil || len(cs) != 0 {
		t.Fatalf("Clusters of an empty store = %v, %v; want none", cs, err)
	}
	for i, name := range []string{"west", "east"} {
		tok := joinToken(name, "tok-"+name, t0.Add(time.Hour))
		if err := s.AddCluster(t.Context(), store.Cluster{Name: name, TrustDomain: []string{tdWest, tdEast}[i]}, tok,
			adminEvent("cluster.add", name, "")); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := l.Clusters(t.Context())
	if err != nil || len(cs) != 2 {
		t.Fatalf("Clusters = %v, %v; want east and west", cs, err)
	}
	checkCluster(t, cs[0], "east", tdEast)
	checkCluster(t, cs[1], "west", tdWest)
}

func testAddClusterAgainSameTrustDomain(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-1")
	first, err := s.Cluster(t.Context(), "east")
	if err != nil {
		t.Fatalf("Cluster: %v", err)
	}
	mustAddCluster(t, s, "east", tdEast, "tok-2")
	again, err := s.Cluster(t.Context(), "east")
	if err != nil {
		t.Fatalf("Cluster: %v", err)
	}
	if !reflect.DeepEqual(again, first) {
		t.Errorf("Cluster after the second AddCluster = %+v, want it unchanged: %+v", again, first)
	}
	// Both tokens work, once each.
	for _, tok := range []string{"tok-2", "tok-1"} {
		if _, _, err := s.RedeemJoinToken(t.Context(), tokenHash(tok), t0, redeemEvent()); err != nil {
			t.Fatalf("RedeemJoinToken(%s): %v", tok, err)
		}
	}
	for _, tok := range []string{"tok-1", "tok-2"} {
		if _, _, err := s.RedeemJoinToken(t.Context(), tokenHash(tok), t0, redeemEvent()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second RedeemJoinToken(%s) = %v, want ErrNotFound", tok, err)
		}
	}
	verifyChain(t, s, 4)
}

func testAddClusterOtherTrustDomain(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-1")
	tok := joinToken("east", "tok-west", t0.Add(time.Hour))
	ev := adminEvent("cluster.add", "east", "conflicting")
	err := s.AddCluster(t.Context(), store.Cluster{Name: "east", TrustDomain: tdWest}, tok, ev)
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("AddCluster(other trust domain) = %v, want ErrAlreadyExists", err)
	}
	got, err := s.Cluster(t.Context(), "east")
	if err != nil {
		t.Fatalf("Cluster: %v", err)
	}
	checkCluster(t, got, "east", tdEast)
	// Nothing was written: no event, no token.
	verifyChain(t, s, 1)
	if _, _, err := s.RedeemJoinToken(t.Context(), tok.Hash, t0, redeemEvent()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RedeemJoinToken(token of the refused AddCluster) = %v, want ErrNotFound", err)
	}
	verifyChain(t, s, 1)
}

func testClusterNotFound(t *testing.T, s RootStoreUnderTest) {
	if _, err := s.Cluster(t.Context(), "east"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Cluster(unknown) = %v, want ErrNotFound", err)
	}
	mustAddCluster(t, s, "east", tdEast, "tok-1")
	if _, err := s.Cluster(t.Context(), "west"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Cluster(unknown) in a non-empty store = %v, want ErrNotFound", err)
	}
}

func testRedeemJoinToken(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-east")
	mustAddCluster(t, s, "west", tdWest, "tok-west")
	ev := redeemEvent()
	ev.Detail = "redeemed"
	// Half a second before it expires, the token is still good.
	c, _, err := s.RedeemJoinToken(t.Context(), tokenHash("tok-west"), t0.Add(time.Hour-500*time.Millisecond), ev)
	if err != nil {
		t.Fatalf("RedeemJoinToken: %v", err)
	}
	checkCluster(t, c, "west", tdWest)
	want, err := s.Cluster(t.Context(), "west")
	if err != nil {
		t.Fatalf("Cluster: %v", err)
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("RedeemJoinToken returned %+v, want the stored cluster %+v", c, want)
	}
	events := verifyChain(t, s, 3)
	ev.Cluster = "west"
	checkEvent(t, events[2], ev)

	if _, _, err := s.RedeemJoinToken(t.Context(), tokenHash("tok-west"), t0, redeemEvent()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second RedeemJoinToken = %v, want ErrNotFound", err)
	}
	verifyChain(t, s, 3)
}

func testRedeemJoinTokenRefused(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-east") // expires at t0+1h
	tests := []struct {
		name string
		hash string
		now  time.Time
	}{
		{"expired", tokenHash("tok-east"), t0.Add(time.Hour + time.Second)},
		{"long expired", tokenHash("tok-east"), t0.Add(48 * time.Hour)},
		{"unknown hash", tokenHash("tok-nobody"), t0},
		{"the token itself, not its hash", "tok-east", t0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.RedeemJoinToken(t.Context(), tt.hash, tt.now, redeemEvent()); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("RedeemJoinToken = %v, want ErrNotFound", err)
			}
		})
	}
	verifyChain(t, s, 1)
	// The refusals left the token unused.
	if _, _, err := s.RedeemJoinToken(t.Context(), tokenHash("tok-east"), t0, redeemEvent()); err != nil {
		t.Fatalf("RedeemJoinToken after refusals: %v", err)
	}
	verifyChain(t, s, 2)
}

func testConcurrentRedeemJoinToken(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-east")
	const n = 8
	errs := allAtOnce(n, func(i int) error {
		ev := redeemEvent()
		ev.Detail = fmt.Sprint("attempt ", i)
		_, _, err := s.RedeemJoinToken(t.Context(), tokenHash("tok-east"), t0, ev)
		return err
	})
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrNotFound):
			t.Errorf("RedeemJoinToken %d = %v, want nil or ErrNotFound", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent redemptions of one token succeeded, want exactly 1", ok, n)
	}
	events := verifyChain(t, s, 2)
	if events[1].Action != "cluster.join" || events[1].Cluster != "east" {
		t.Fatalf("redemption event = %+v", events[1])
	}
}

func newIntermediate(serial, cluster, root string, notBefore, notAfter time.Time) store.Intermediate {
	der := []byte("DER of " + serial + "\x00\xff")
	sum := sha256.Sum256(der)
	return store.Intermediate{
		Serial:          serial,
		Cluster:         cluster,
		TrustDomain:     cluster + ".example.org",
		RootFingerprint: root,
		NotBefore:       notBefore,
		NotAfter:        notAfter,
		Fingerprint:     hex.EncodeToString(sum[:]),
		DER:             der,
	}
}

func intermediateEvent(in store.Intermediate) store.AuditEvent {
	return store.AuditEvent{Time: in.NotBefore, Actor: "system:root", Action: "intermediate.sign",
		Cluster: in.Cluster, Serial: in.Serial}
}

func checkIntermediate(t *testing.T, got, want store.Intermediate) {
	t.Helper()
	want.NotBefore, want.NotAfter = stored(want.NotBefore), stored(want.NotAfter)
	if got.Serial != want.Serial || got.Cluster != want.Cluster || got.TrustDomain != want.TrustDomain ||
		got.RootFingerprint != want.RootFingerprint || got.Fingerprint != want.Fingerprint ||
		!bytes.Equal(got.DER, want.DER) || !got.NotBefore.Equal(want.NotBefore) || !got.NotAfter.Equal(want.NotAfter) {
		t.Errorf("intermediate mismatch\n got %+v\nwant %+v", got, want)
	}
	if got.NotBefore.Location() != time.UTC || got.NotAfter.Location() != time.UTC {
		t.Errorf("intermediate %s: times not in UTC: %v, %v", got.Serial, got.NotBefore, got.NotAfter)
	}
}

func intermediateSerials(ins []store.Intermediate) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.Serial
	}
	return out
}

func testIntermediates(t *testing.T, s RootStoreUnderTest) {
	if got, err := s.Intermediates(t.Context(), store.IntermediateFilter{}); err != nil || len(got) != 0 {
		t.Fatalf("Intermediates on an empty store = %v, %v; want none", got, err)
	}
	h, d := time.Hour, 24*time.Hour
	rootA, rootB := fmt.Sprintf("%064x", 0xa), fmt.Sprintf("%064x", 0xb)
	zone := time.FixedZone("UTC-7", -7*3600)
	// In listing order.
	ins := []store.Intermediate{
		newIntermediate("i01", "east", rootA, t0.Add(-60*d), t0.Add(-30*d)), // expired at t0
		newIntermediate("i02", "west", rootA, t0.Add(-10*d), t0.Add(20*d)),  // ties i03 on NotBefore
		newIntermediate("i03", "east", rootA, t0.Add(-10*d), t0.Add(20*d)),
		newIntermediate("i04", "east", rootB, t0.Add(-h).Add(250*time.Millisecond).In(zone), t0.Add(30*d).In(zone)),
		newIntermediate("i05", "west", rootB, t0.Add(h), t0.Add(30*d)), // not yet valid at t0
	}
	// Recorded out of order, so the listing order is the store's doing.
	for _, i := range []int{4, 2, 0, 3, 1} {
		if err := s.RecordIntermediate(t.Context(), ins[i], intermediateEvent(ins[i])); err != nil {
			t.Fatalf("RecordIntermediate(%s): %v", ins[i].Serial, err)
		}
	}
	half := 500 * time.Millisecond
	tests := []struct {
		name   string
		filter store.IntermediateFilter
		want   []string
	}{
		{"all, oldest first, ties by serial", store.IntermediateFilter{}, []string{"i01", "i02", "i03", "i04", "i05"}},
		{"cluster", store.IntermediateFilter{Cluster: "east"}, []string{"i01", "i03", "i04"}},
		{"root", store.IntermediateFilter{RootFingerprint: rootB}, []string{"i04", "i05"}},
		{"cluster and root", store.IntermediateFilter{Cluster: "east", RootFingerprint: rootA}, []string{"i01", "i03"}},
		{"active at t0", store.IntermediateFilter{ActiveAt: t0}, []string{"i02", "i03", "i04"}},
		{"active at NotAfter is inclusive", store.IntermediateFilter{ActiveAt: t0.Add(20 * d)}, []string{"i02", "i03", "i04", "i05"}},
		{"active just after NotAfter", store.IntermediateFilter{ActiveAt: t0.Add(20*d + half)}, []string{"i04", "i05"}},
		{"active at NotBefore is inclusive", store.IntermediateFilter{ActiveAt: t0.Add(h)}, []string{"i02", "i03", "i04", "i05"}},
		{"active just before NotBefore", store.IntermediateFilter{ActiveAt: t0.Add(h - half)}, []string{"i02", "i03", "i04"}},
		{"active, stored NotBefore is truncated", store.IntermediateFilter{ActiveAt: t0.Add(-h)}, []string{"i02", "i03", "i04"}},
		{"active at and cluster", store.IntermediateFilter{ActiveAt: t0, Cluster: "west"}, []string{"i02"}},
		{"all three", store.IntermediateFilter{ActiveAt: t0.Add(2 * h), Cluster: "west", RootFingerprint: rootB}, []string{"i05"}},
		{"no match", store.IntermediateFilter{Cluster: "north"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Intermediates(t.Context(), tt.filter)
			if err != nil {
				t.Fatalf("Intermediates: %v", err)
			}
			if !slices.Equal(intermediateSerials(got), tt.want) {
				t.Fatalf("Intermediates(%+v) = %v, want %v", tt.filter, intermediateSerials(got), tt.want)
			}
		})
	}
	// Listed intermediates are complete records, times at second precision.
	all, err := s.Intermediates(t.Context(), store.IntermediateFilter{})
	if err != nil || len(all) != len(ins) {
		t.Fatalf("Intermediates = %d records, %v; want %d", len(all), err, len(ins))
	}
	for i, want := range ins {
		checkIntermediate(t, all[i], want)
	}
	events := verifyChain(t, s, len(ins))
	if events[0].Serial != "i05" || events[0].Action != "intermediate.sign" {
		t.Errorf("first event = %+v, want the intermediate.sign of i05", events[0])
	}
}

func testDuplicateIntermediate(t *testing.T, s RootStoreUnderTest) {
	orig := newIntermediate("d1", "east", fmt.Sprintf("%064x", 1), t0, t0.Add(time.Hour))
	if err := s.RecordIntermediate(t.Context(), orig, intermediateEvent(orig)); err != nil {
		t.Fatalf("RecordIntermediate: %v", err)
	}
	dup := newIntermediate("d1", "west", fmt.Sprintf("%064x", 2), t0.Add(time.Minute), t0.Add(2*time.Hour))
	if err := s.RecordIntermediate(t.Context(), dup, intermediateEvent(dup)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("RecordIntermediate(duplicate serial) = %v, want ErrAlreadyExists", err)
	}
	got, err := s.Intermediates(t.Context(), store.IntermediateFilter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("Intermediates = %v, %v; want the original only", intermediateSerials(got), err)
	}
	checkIntermediate(t, got[0], orig)
	verifyChain(t, s, 1)
}

func newRoot(name string, added, activate time.Time) store.Root {
	der := []byte("root DER " + name + "\x00\x01\xfe")
	sum := sha256.Sum256(der)
	return store.Root{Fingerprint: hex.EncodeToString(sum[:]), DER: der, KeyRef: "vault:" + name,
		AddedAt: added, ActivateAt: activate}
}

func rootEvent(r store.Root) store.AuditEvent {
	return store.AuditEvent{Time: r.AddedAt, Actor: "system:root", Action: "root.add", Detail: r.Fingerprint}
}

func checkRoot(t *testing.T, got, want store.Root) {
	t.Helper()
	want.AddedAt, want.ActivateAt = stored(want.AddedAt), stored(want.ActivateAt)
	if got.Fingerprint != want.Fingerprint || !bytes.Equal(got.DER, want.DER) || got.KeyRef != want.KeyRef ||
		!got.AddedAt.Equal(want.AddedAt) || !got.ActivateAt.Equal(want.ActivateAt) {
		t.Errorf("root mismatch\n got %+v\nwant %+v", got, want)
	}
	if got.AddedAt.Location() != time.UTC || got.ActivateAt.Location() != time.UTC {
		t.Errorf("root %s: times not in UTC: %v, %v", got.Fingerprint, got.AddedAt, got.ActivateAt)
	}
}

func testRoots(t *testing.T, s RootStoreUnderTest) {
	if got, err := s.Roots(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("Roots on an empty store = %v, %v; want none", got, err)
	}
	zone := time.FixedZone("UTC+9", 9*3600)
	d := 24 * time.Hour
	first := newRoot("first", t0.Add(-90*d), t0.Add(-90*d))
	second := newRoot("second", t0.Add(999*time.Millisecond).In(zone), t0.Add(7*d+time.Millisecond).In(zone))
	third := newRoot("third", t0.Add(400*time.Millisecond), t0.Add(7*d)) // same stored AddedAt as second
	for _, r := range []store.Root{second, third, first} {
		if err := s.AddRoot(t.Context(), r, rootEvent(r)); err != nil {
			t.Fatalf("AddRoot(%s): %v", r.KeyRef, err)
		}
	}
	want := []store.Root{first, second, third}
	if second.Fingerprint > third.Fingerprint {
		want[1], want[2] = third, second
	}
	got, err := s.Roots(t.Context())
	if err != nil {
		t.Fatalf("Roots: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("Roots = %d roots, want %d", len(got), len(want))
	}
	for i := range want {
		checkRoot(t, got[i], want[i])
	}
	events := verifyChain(t, s, 3)
	for i, r := range []store.Root{second, third, first} {
		checkEvent(t, events[i], rootEvent(r))
	}
}

func testDuplicateRoot(t *testing.T, s RootStoreUnderTest) {
	r := newRoot("only", t0, t0)
	if err := s.AddRoot(t.Context(), r, rootEvent(r)); err != nil {
		t.Fatalf("AddRoot: %v", err)
	}
	dup := r
	dup.KeyRef, dup.AddedAt = "/etc/meshca/other.key", t0.Add(time.Hour)
	if err := s.AddRoot(t.Context(), dup, rootEvent(dup)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("AddRoot(duplicate fingerprint) = %v, want ErrAlreadyExists", err)
	}
	got, err := s.Roots(t.Context())
	if err != nil || len(got) != 1 {
		t.Fatalf("Roots = %d roots, %v; want the original only", len(got), err)
	}
	checkRoot(t, got[0], r)
	verifyChain(t, s, 1)
}

// testRootChainWithConcurrentIssuance mixes every kind of RootStore write
// with concurrent issuances: the chain stays whole and gapless.
func testRootChainWithConcurrentIssuance(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-0")
	const issuances, rounds = 24, 4
	var writes []func() error
	for r := range rounds {
		writes = append(writes, func() error {
			tok := fmt.Sprint("tok-", r+1)
			c := store.Cluster{Name: "east", TrustDomain: tdEast}
			err := s.AddCluster(t.Context(), c, joinToken("east", tok, t0.Add(time.Hour)), adminEvent("cluster.add", "east", tok))
			_, _, redeemErr := s.RedeemJoinToken(t.Context(), tokenHash(tok), t0, redeemEvent())
			return errors.Join(err, redeemErr)
		}, func() error {
			in := newIntermediate(fmt.Sprint("mixi", r), "east", fmt.Sprintf("%064x", r), t0, t0.Add(time.Hour))
			return s.RecordIntermediate(t.Context(), in, intermediateEvent(in))
		}, func() error {
			root := newRoot(fmt.Sprint("mix", r), t0, t0)
			return s.AddRoot(t.Context(), root, rootEvent(root))
		})
	}
	writeWithIssuances(t, s, issuances, writes, map[string]int{"cluster.add": 1 + rounds, "cluster.join": rounds,
		"certificate.issue": issuances, "intermediate.sign": rounds, "root.add": rounds})
}

// writeWithIssuances runs issuances issuances (serials mix00, mix01, ...)
// and writes, all at once, and fails the test if any fails. Then the chain
// must be whole and hold exactly the events counted in want, by action
// (events written before count too).
func writeWithIssuances(t *testing.T, s store.Store, issuances int, writes []func() error, want map[string]int) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, issuances+len(writes))
	for i := range issuances {
		wg.Go(func() {
			<-start
			c := newCert(fmt.Sprintf("mix%02x", i), idWeb, "east", t0, t0.Add(time.Hour))
			errs <- s.RecordIssuance(t.Context(), c, issueEvent(c))
		})
	}
	for _, write := range writes {
		wg.Go(func() {
			<-start
			errs <- write()
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent write: %v", err)
		}
	}
	total := 0
	for _, n := range want {
		total += n
	}
	counts := map[string]int{}
	for _, ev := range verifyChain(t, s, total) {
		counts[ev.Action]++
	}
	for action, n := range want {
		if counts[action] != n {
			t.Errorf("%d %s events, want %d", counts[action], action, n)
		}
	}
}

func testRootAfterClose(t *testing.T, s RootStoreUnderTest) {
	mustAddCluster(t, s, "east", tdEast, "tok-1")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := t.Context()
	in := newIntermediate("c1", "east", "", t0, t0.Add(time.Hour))
	root := newRoot("closed", t0, t0)
	ops := map[string]func() error{
		"AddCluster": func() error {
			return s.AddCluster(ctx, store.Cluster{Name: "west", TrustDomain: tdWest},
				joinToken("west", "tok-w", t0.Add(time.Hour)), adminEvent("cluster.add", "west", ""))
		},
		"Cluster": func() error { _, err := s.Cluster(ctx, "east"); return err },
		"RedeemJoinToken": func() error {
			_, _, err := s.RedeemJoinToken(ctx, tokenHash("tok-1"), t0, redeemEvent())
			return err
		},
		"RecordIntermediate": func() error { return s.RecordIntermediate(ctx, in, intermediateEvent(in)) },
		"Intermediates":      func() error { _, err := s.Intermediates(ctx, store.IntermediateFilter{}); return err },
		"AddRoot":            func() error { return s.AddRoot(ctx, root, rootEvent(root)) },
		"Roots":              func() error { _, err := s.Roots(ctx); return err },
		"ClusterCredential":  func() error { _, err := s.ClusterCredential(ctx, "east", ""); return err },
		"ClusterCredentials": func() error { _, err := s.ClusterCredentials(ctx, "east"); return err },
		"SwapClusterCredential": func() error {
			return s.SwapClusterCredential(ctx, store.ClusterCredential{}, store.ClusterCredential{Cluster: "east", Current: "0a"},
				credentialEvent("credential.issue", "east", "0a"))
		},
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// A cluster's DNS names are stored with it, kept by a second AddCluster,
// replaced (and cleared) by SetClusterDNSNames with its audit event;
// invalid names and unknown clusters write nothing.
func testClusterDNSNames(t *testing.T, s RootStoreUnderTest) {
	ctx := t.Context()
	names := []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}
	c := store.Cluster{Name: "east", TrustDomain: tdEast, DNSNames: names}
	if err := s.AddCluster(ctx, c, joinToken("east", "tok-1", t0.Add(time.Hour)), adminEvent("cluster.add", "east", "")); err != nil {
		t.Fatalf("AddCluster: %v", err)
	}
	check := func(want []string) {
		t.Helper()
		got, err := s.Cluster(ctx, "east")
		if err != nil {
			t.Fatalf("Cluster: %v", err)
		}
		if !reflect.DeepEqual(got.DNSNames, want) {
			t.Fatalf("DNS names %q, want %q", got.DNSNames, want)
		}
		var inner any = s
		if w, ok := s.(*rootCloseOnce); ok {
			inner = w.RootStoreUnderTest
		}
		l, ok := inner.(clusterLister)
		if !ok {
			t.Fatal("the store cannot list its clusters")
		}
		all, err := l.Clusters(ctx)
		if err != nil || len(all) != 1 || !reflect.DeepEqual(all[0].DNSNames, want) {
			t.Fatalf("Clusters = %+v, %v; want DNS names %q", all, err, want)
		}
	}
	check(names)
	c.DNSNames = []string{"other.svc"}
	if err := s.AddCluster(ctx, c, joinToken("east", "tok-2", t0.Add(time.Hour)), adminEvent("cluster.add", "east", "")); err != nil {
		t.Fatalf("AddCluster again: %v", err)
	}
	check(names)
	ev := adminEvent("cluster.dns_names", "east", "istiod-remote.istio-system.svc")
	if err := s.SetClusterDNSNames(ctx, "east", []string{"istiod-remote.istio-system.svc"}, ev); err != nil {
		t.Fatalf("SetClusterDNSNames: %v", err)
	}
	check([]string{"istiod-remote.istio-system.svc"})
	events := verifyChain(t, s, 3)
	checkEvent(t, events[2], ev)
	for _, bad := range [][]string{{"*.istio-system.svc"}, {"a b"}, {"Upper.svc"}, {"a.svc", "a.svc"}} {
		if err := s.SetClusterDNSNames(ctx, "east", bad, adminEvent("cluster.dns_names", "east", "")); err == nil {
			t.Errorf("SetClusterDNSNames(%q) accepted", bad)
		}
	}
	if err := s.SetClusterDNSNames(ctx, "west", names, adminEvent("cluster.dns_names", "west", "")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetClusterDNSNames(unknown cluster) = %v, want ErrNotFound", err)
	}
	verifyChain(t, s, 3)
	if err := s.SetClusterDNSNames(ctx, "east", nil, adminEvent("cluster.dns_names", "east", "")); err != nil {
		t.Fatalf("SetClusterDNSNames(none): %v", err)
	}
	check(nil)
}
