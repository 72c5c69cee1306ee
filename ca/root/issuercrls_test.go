package root

import (
	"context"
	"testing"
	"time"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// TestIssuerCRLsReachEveryReplica: an issuer publishes its CRL to one root
// replica; another replica on the same store relays it after its next
// re-evaluation, a root started afterwards has it at once, and an older CRL
// stored later does not replace it.
func TestIssuerCRLsReachEveryReplica(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	eastRoot := h.rootClient(addr, east)
	ctx := context.Background()
	other := h.replica()
	if got := domainCRLs(t, other, "east.example"); len(got) != 0 {
		t.Fatalf("the other replica relays %d issuer CRLs before any was published", len(got))
	}

	crl10 := issuerCRLFor(t, east, 10, h.clock.Now(), 0, 0x1234)
	if _, err := eastRoot.PublishCRLs(ctx, crlProtos(crl10)); err != nil {
		t.Fatalf("PublishCRLs: %v", err)
	}
	if got := domainCRLs(t, other, "east.example"); len(got) != 0 {
		t.Fatal("the other replica relays the CRL before it re-evaluated")
	}
	h.clock.Advance(time.Second)
	other.refresh()
	if !sameCRLs(domainCRLs(t, other, "east.example"), crl10) {
		t.Fatal("the other replica does not relay the CRL published to the first after its re-evaluation")
	}
	if !sameCRLs(domainCRLs(t, h.replica(), "east.example"), crl10) {
		t.Fatal("a root started after the publication does not relay the stored CRL")
	}

	// A newer CRL published to the other replica reaches the first; an
	// older one published afterwards replaces nothing anywhere.
	crl11 := issuerCRLFor(t, east, 11, h.clock.Now(), 0, 0x1234, 0x99)
	otherAddr := other.serve()
	otherRoot := meshcav1.NewRootServiceClient(other.dial(otherAddr, east.tlsCert()))
	if _, err := otherRoot.PublishCRLs(ctx, crlProtos(crl11)); err != nil {
		t.Fatalf("PublishCRLs to the other replica: %v", err)
	}
	if _, err := eastRoot.PublishCRLs(ctx, crlProtos(issuerCRLFor(t, east, 9, h.clock.Now(), 0))); err != nil {
		t.Fatalf("PublishCRLs number 9: %v", err)
	}
	h.clock.Advance(time.Second)
	h.refresh()
	other.refresh()
	for name, r := range map[string]*harness{"first": h, "other": other} {
		if !sameCRLs(domainCRLs(t, r, "east.example"), crl11) {
			t.Fatalf("the %s replica does not relay CRL number 11 alone", name)
		}
	}
}
