package root

import (
	"bytes"
	"context"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// issuerCRLFor signs a CRL with s's intermediate.
func issuerCRLFor(t testing.TB, s *issuerSide, number int64, now time.Time, validity time.Duration, serials ...int64) trust.CRL {
	t.Helper()
	req := ca.CRLRequest{Number: big.NewInt(number), Now: now, Validity: validity}
	for _, n := range serials {
		req.Serials = append(req.Serials, big.NewInt(n))
	}
	crl, _, err := s.authority(t).SignCRL(req)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func crlProtos(crls ...trust.CRL) *meshcav1.PublishCRLsRequest {
	req := &meshcav1.PublishCRLsRequest{}
	for _, c := range crls {
		req.Crls = append(req.Crls, &meshcav1.CRL{Der: c.DER, IssuerChain: c.IssuerChain})
	}
	return req
}

// domainCRLs are the CRLs of td in the current bundle.
// domainCRLs returns the issuers' CRLs published in td (the root's own
// CRL, which names no issuer chain, left out).
func domainCRLs(t testing.TB, h *harness, td string) []trust.CRL {
	t.Helper()
	b, _ := h.root.Current()
	d, ok := b.Domain(spiffeid.RequireTrustDomainFromString(td))
	if !ok {
		t.Fatalf("no domain %s in bundle %d", td, b.Sequence)
	}
	var out []trust.CRL
	for _, c := range d.CRLs {
		if len(c.IssuerChain) != 0 {
			out = append(out, c)
		}
	}
	return out
}

// equalButCRLs compares two bundles' content except their CRLs (the root's
// own CRLs are re-signed, with new numbers, after a restart).
func equalButCRLs(a, b *trust.TrustBundle) bool {
	strip := func(x *trust.TrustBundle) *trust.TrustBundle {
		y := *x
		y.Domains = slices.Clone(x.Domains)
		for i := range y.Domains {
			y.Domains[i].CRLs = nil
		}
		return &y
	}
	return strip(a).Equal(strip(b))
}

func sameCRLs(a []trust.CRL, b ...trust.CRL) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].DER, b[i].DER) {
			return false
		}
	}
	return true
}

func TestPublishCRLs(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	west := h.mustEnroll(addr, "west", "west.example")
	eastRoot := h.rootClient(addr, east)
	westRoot := h.rootClient(addr, west)
	bg := context.Background()
	now := h.clock.Now()

	before, _ := h.root.Current()
	crl10 := issuerCRLFor(t, east, 10, now, 0, 0x1234)
	if _, err := eastRoot.PublishCRLs(bg, crlProtos(crl10)); err != nil {
		t.Fatalf("PublishCRLs: %v", err)
	}
	got := domainCRLs(t, h, "east.example")
	if !sameCRLs(got, crl10) || len(domainCRLs(t, h, "west.example")) != 0 {
		t.Fatalf("east.example CRLs %d, west.example %d; want the published one in east.example only",
			len(got), len(domainCRLs(t, h, "west.example")))
	}
	d, _ := h.root.Current()
	if d.Sequence <= before.Sequence {
		t.Fatalf("bundle sequence %d -> %d after a new CRL", before.Sequence, d.Sequence)
	}
	wantBundleSigned(t, h, d)
	ed, _ := d.Domain(spiffeid.RequireTrustDomainFromString("east.example"))
	if rl, issuer, err := trust.VerifyCRL(got[0], ed.Roots, now); err != nil || !issuer.Equal(east.inter) || rl.Number.Int64() != 10 {
		t.Fatalf("published CRL does not verify as east's: %v", err)
	}

	// Not newer (lower, or equal with other content): ignored, no new bundle.
	for _, n := range []int64{5, 10} {
		if _, err := eastRoot.PublishCRLs(bg, crlProtos(issuerCRLFor(t, east, n, now, 0, 0x99))); err != nil {
			t.Fatalf("PublishCRLs number %d: %v", n, err)
		}
		if b, _ := h.root.Current(); b != d || !sameCRLs(domainCRLs(t, h, "east.example"), crl10) {
			t.Fatalf("CRL number %d replaced number 10", n)
		}
	}
	// Newer: replaces.
	crl11 := issuerCRLFor(t, east, 11, now, 0, 0x1234, 0x99)
	if _, err := eastRoot.PublishCRLs(bg, crlProtos(crl11)); err != nil {
		t.Fatal(err)
	}
	if !sameCRLs(domainCRLs(t, h, "east.example"), crl11) {
		t.Fatal("CRL number 11 did not replace number 10")
	}
	b11, _ := h.root.Current()
	wantBundleSigned(t, h, b11)

	// Refused calls change nothing.
	rootCRL, _, err := h.root.state.Load().active.SignCRL(ca.CRLRequest{Now: now, Serials: []*big.Int{big.NewInt(1)}})
	if err != nil {
		t.Fatal(err)
	}
	garbage := trust.CRL{DER: []byte("not a CRL")}
	badChain := crl11
	badChain.IssuerChain = [][]byte{[]byte("not a certificate")}
	tooMany := make([]trust.CRL, maxCRLsPerCall+1)
	for i := range tooMany {
		tooMany[i] = crl11
	}
	for _, tc := range []struct {
		name   string
		client meshcav1.RootServiceClient
		req    *meshcav1.PublishCRLsRequest
		want   codes.Code
	}{
		{"another cluster's CRL", westRoot, crlProtos(issuerCRLFor(t, east, 20, now, 0)), codes.PermissionDenied},
		{"a root's CRL", eastRoot, crlProtos(rootCRL), codes.PermissionDenied},
		{"garbage", eastRoot, crlProtos(garbage), codes.InvalidArgument},
		{"garbage issuer chain", eastRoot, crlProtos(badChain), codes.InvalidArgument},
		{"one bad among good", eastRoot, crlProtos(issuerCRLFor(t, east, 21, now, 0), garbage), codes.InvalidArgument},
		{"too many", eastRoot, crlProtos(tooMany...), codes.InvalidArgument},
		{"no credential", meshcav1.NewRootServiceClient(h.dial(addr, nil)), crlProtos(crl11), codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.PublishCRLs(bg, tc.req)
			wantCode(t, err, tc.want)
			if b, _ := h.root.Current(); b != b11 {
				t.Fatal("a refused PublishCRLs published a new bundle")
			}
		})
	}

	// A stale CRL is skipped; a kept one that goes stale is dropped.
	short := issuerCRLFor(t, west, 1, now, 10*time.Minute)
	h.clock.Advance(11 * time.Minute)
	if _, err := westRoot.PublishCRLs(bg, crlProtos(short)); err != nil {
		t.Fatalf("PublishCRLs of a stale CRL: %v", err)
	}
	if len(domainCRLs(t, h, "west.example")) != 0 {
		t.Fatal("a stale CRL was published")
	}
	short = issuerCRLFor(t, west, 2, h.clock.Now(), 10*time.Minute)
	if _, err := westRoot.PublishCRLs(bg, crlProtos(short)); err != nil {
		t.Fatal(err)
	}
	if !sameCRLs(domainCRLs(t, h, "west.example"), short) {
		t.Fatal("west's CRL was not published")
	}
	h.clock.Advance(11 * time.Minute)
	h.refresh()
	if len(domainCRLs(t, h, "west.example")) != 0 || !sameCRLs(domainCRLs(t, h, "east.example"), crl11) {
		t.Fatal("the stale CRL was not dropped, or the current one was")
	}

	// Revoking the cluster drops its CRLs (the root's CRL now covers its
	// intermediates).
	if _, err := h.root.revoke(bg, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}}, "admin:test"); err != nil {
		t.Fatal(err)
	}
	for _, c := range domainCRLs(t, h, "east.example") {
		if len(c.IssuerChain) != 0 {
			t.Fatal("a revoked cluster's CRL is still published")
		}
	}
	b, _ := h.root.Current()
	wantBundleSigned(t, h, b)
}

// TestPublishedCRLDroppedWhenIssuerExpires: a CRL leaves the bundle when
// the intermediate that signed it expires.
func TestPublishedCRLDroppedWhenIssuerExpires(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	h.clock.Advance(time.Hour)
	next, err := renew(t, h.dial(addr, east.tlsCert()), east, false)
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	old, cur := issuerCRLFor(t, east, 1, now, 0), issuerCRLFor(t, next, 1, now, 0)
	client := h.rootClient(addr, east)
	if _, err := client.PublishCRLs(context.Background(), crlProtos(old, cur)); err != nil {
		t.Fatal(err)
	}
	if got := domainCRLs(t, h, "east.example"); len(got) != 2 {
		t.Fatalf("%d CRLs published, want 2", len(got))
	}
	h.clock.Advance(east.inter.NotAfter.Sub(h.clock.Now()) + time.Second)
	h.refresh()
	if got := domainCRLs(t, h, "east.example"); !sameCRLs(got, cur) {
		t.Fatalf("%d CRLs after the first intermediate expired, want only the current one's", len(got))
	}
	// An expired issuer's CRL is skipped, not an error.
	if _, err := client.PublishCRLs(context.Background(), crlProtos(old, cur)); err != nil {
		t.Fatalf("PublishCRLs with an expired issuer's CRL: %v", err)
	}
	if got := domainCRLs(t, h, "east.example"); !sameCRLs(got, cur) {
		t.Fatal("an expired issuer's CRL was published again")
	}
}
