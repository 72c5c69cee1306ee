package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/meshca/meshca/store"
)

// testPinStandaloneRoot: the first fingerprint recorded for a trust
// domain's cluster wins; a later one is not recorded, the first is returned
// and nothing is appended to the audit chain. Other clusters and trust domains are separate.
func testPinStandaloneRoot(t *testing.T, s RootStoreUnderTest) {
	ctx := t.Context()
	if _, err := s.StandaloneRoot(ctx, tdEast, "east"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("StandaloneRoot(empty store) = %v, want ErrNotFound", err)
	}
	pin := func(td, cluster, fp, want string) {
		t.Helper()
		got, err := s.PinStandaloneRoot(ctx, td, cluster, fp)
		if err != nil || got != want {
			t.Fatalf("PinStandaloneRoot(%s, %s, %s) = %q, %v; want %q", td, cluster, fp, got, err, want)
		}
	}
	pin(tdEast, "east", "aaaa", "aaaa")
	pin(tdEast, "east", "bbbb", "aaaa")
	pin(tdEast, "east", "aaaa", "aaaa")
	pin(tdEast, "other", "cccc", "cccc")
	pin(tdWest, "east", "dddd", "dddd")
	for _, c := range []struct{ td, cluster, want string }{
		{tdEast, "east", "aaaa"}, {tdEast, "other", "cccc"}, {tdWest, "east", "dddd"},
	} {
		if got, err := s.StandaloneRoot(ctx, c.td, c.cluster); err != nil || got != c.want {
			t.Fatalf("StandaloneRoot(%s, %s) = %q, %v; want %q", c.td, c.cluster, got, err, c.want)
		}
	}
	if _, err := s.PinStandaloneRoot(ctx, tdEast, "x", ""); err == nil {
		t.Fatal("PinStandaloneRoot(empty fingerprint) succeeded")
	}
	verifyChain(t, s, 0)
}

// testConcurrentPinStandaloneRoot: replicas starting together on an empty
// store, each with its own root, all get back the same one of those roots,
// and only it is recorded.
func testConcurrentPinStandaloneRoot(t *testing.T, s RootStoreUnderTest) {
	const n = 8
	got := make([]string, n)
	errs := allAtOnce(n, func(i int) error {
		var err error
		got[i], err = s.PinStandaloneRoot(t.Context(), tdEast, "east", fmt.Sprintf("%064x", i+1))
		return err
	})
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("PinStandaloneRoot %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("concurrent pins returned %q and %q, want one root", got[0], got[i])
		}
	}
	verifyChain(t, s, 0)
	if rec, err := s.StandaloneRoot(t.Context(), tdEast, "east"); err != nil || rec != got[0] {
		t.Fatalf("StandaloneRoot = %q, %v; want %q", rec, err, got[0])
	}
}
