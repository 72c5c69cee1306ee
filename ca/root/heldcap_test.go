package root

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/meshca/meshca/trust"
)

// TestJWTAuthoritiesCappedPerCluster: an issuer that signs throwaway JWT
// signer certificates under its own intermediate and publishes them a few
// at a time is refused once its cluster holds maxHeldPerIssuer, with
// nothing changed and nothing stored for the other replicas; republishing
// held keys, and another cluster's keys, are still accepted, and keys that
// expired make room again.
func TestJWTAuthoritiesCappedPerCluster(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	west := h.mustEnroll(addr, "west", "west.example")
	eastRoot := h.rootClient(addr, east)
	bg := context.Background()
	now := h.clock.Now()
	throwaway := func(n int) []trust.JWTAuthority {
		out := make([]trust.JWTAuthority, n)
		for i := range out {
			out[i] = newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, now.Add(30*time.Minute)).authority
		}
		return out
	}

	const perCall = 5
	var held []trust.JWTAuthority
	var err error
	for calls := 0; err == nil; calls++ {
		if calls > maxHeldPerIssuer {
			t.Fatalf("%d calls of %d throwaway JWT authorities accepted", calls, perCall)
		}
		batch := throwaway(perCall)
		if _, err = eastRoot.PublishCRLs(bg, jwtProtos(t, batch...)); err == nil {
			held = append(held, batch...)
		}
	}
	wantCode(t, err, codes.FailedPrecondition)
	if got := domainJWTs(t, h, "east.example"); len(got) != len(held) || len(held) > maxHeldPerIssuer ||
		len(held)+perCall <= maxHeldPerIssuer {
		t.Fatalf("after the refusal the bundle holds %d of east's keys, %d were accepted; want at most %d, refused only past it",
			len(got), len(held), maxHeldPerIssuer)
	}
	b, _ := h.root.Current()
	// One more key alone is refused too once the cluster is full.
	for len(held) < maxHeldPerIssuer {
		one := throwaway(1)
		if _, err := eastRoot.PublishCRLs(bg, jwtProtos(t, one...)); err != nil {
			t.Fatalf("a key below the cap: %v", err)
		}
		held = append(held, one...)
		b, _ = h.root.Current()
	}
	_, err = eastRoot.PublishCRLs(bg, jwtProtos(t, throwaway(1)...))
	wantCode(t, err, codes.FailedPrecondition)
	if got, _ := h.root.Current(); got != b {
		t.Fatal("a refused PublishCRLs published a new bundle")
	}
	h.clock.Advance(time.Second)
	if got := domainJWTs(t, h.replica(), "east.example"); len(got) != maxHeldPerIssuer {
		t.Fatalf("a root started on the store publishes %d of east's keys, want the %d accepted", len(got), maxHeldPerIssuer)
	}

	// What is held can be published again; another cluster has its own cap.
	if _, err := eastRoot.PublishCRLs(bg, jwtProtos(t, held[:perCall]...)); err != nil {
		t.Fatalf("republishing held keys: %v", err)
	}
	wa := newJWTSigner(t, west, signerURI(t, "west.example", "west"), now, time.Time{})
	if _, err := h.rootClient(addr, west).PublishCRLs(bg, jwtProtos(t, wa.authority)); err != nil {
		t.Fatalf("west publishing its key while east is full: %v", err)
	}

	// Expired keys leave room.
	h.clock.Advance(31 * time.Minute)
	h.refresh()
	now = h.clock.Now()
	if _, err := eastRoot.PublishCRLs(bg, jwtProtos(t, throwaway(perCall)...)); err != nil {
		t.Fatalf("publishing after east's keys expired: %v", err)
	}
}

// TestIssuerCRLsCappedPerCluster: an issuer that renews again and again
// for intermediates and publishes a CRL of each is refused once its cluster
// holds maxHeldPerIssuer CRLs; a newer CRL of a held intermediate is still
// accepted.
func TestIssuerCRLsCappedPerCluster(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	bg := context.Background()
	now := h.clock.Now()
	sides := []*issuerSide{east}
	for len(sides) <= maxHeldPerIssuer {
		next, err := renew(t, h.dial(addr, sides[len(sides)-1].tlsCert()), sides[len(sides)-1], true)
		if err != nil {
			t.Fatalf("renewal %d: %v", len(sides), err)
		}
		sides = append(sides, next)
	}
	last := sides[len(sides)-1]
	client := h.rootClient(addr, last)
	for i, s := range sides[:maxHeldPerIssuer] {
		if _, err := client.PublishCRLs(bg, crlProtos(issuerCRLFor(t, s, 1, now, 0))); err != nil {
			t.Fatalf("CRL of intermediate %d: %v", i, err)
		}
	}
	b, _ := h.root.Current()
	_, err := client.PublishCRLs(bg, crlProtos(issuerCRLFor(t, last, 1, now, 0)))
	wantCode(t, err, codes.FailedPrecondition)
	if got, _ := h.root.Current(); got != b || len(domainCRLs(t, h, "east.example")) != maxHeldPerIssuer {
		t.Fatalf("a refused PublishCRLs changed the bundle (%d CRLs of east, want %d)",
			len(domainCRLs(t, h, "east.example")), maxHeldPerIssuer)
	}
	if _, err := client.PublishCRLs(bg, crlProtos(issuerCRLFor(t, sides[0], 2, now, 0, 0x42))); err != nil {
		t.Fatalf("a newer CRL of a held intermediate: %v", err)
	}
	if got, _ := h.root.Current(); got == b {
		t.Fatal("a newer CRL of a held intermediate published no new bundle")
	}
}
