package agent

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// TestVerifyJWTAuthorities checks which authorities of a received bundle
// the agent keeps: own domains' by their chain, federated ones as they
// are, none expired, one per key ID.
func TestVerifyJWTAuthorities(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	now := time.Now()
	good := newJWTKey(t, tree, time.Time{})
	expiring := newJWTKey(t, tree, now.Add(10*time.Minute))
	expired := newJWTKey(t, tree, now.Add(-time.Second))
	stranger := newJWTKey(t, testkit.New(t, testkit.Options{RootKey: "stranger"}), time.Time{})
	badKID := newJWTKey(t, tree, time.Time{})
	badKID.auth.KeyID = good.auth.KeyID + "x"
	fedKey := newJWTKey(t, tree, time.Time{}).auth
	fedKey.Chain, fedKey.KeyID = nil, "federated-1"
	fedLater, fedExpired := fedKey, fedKey
	fedLater.ExpiresAt = now.Add(time.Hour)
	fedExpired.KeyID, fedExpired.ExpiresAt = "federated-2", now.Add(-time.Minute)
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	unsupported := trust.JWTAuthority{KeyID: "x25519", PublicKey: x25519.PublicKey()}

	b := &trust.TrustBundle{Sequence: 3, Domains: []trust.DomainBundle{
		{TrustDomain: webID.TrustDomain(), Roots: tree.Bundle,
			JWTAuthorities: []trust.JWTAuthority{good.auth, expiring.auth, expired.auth, stranger.auth, badKID.auth, good.auth}},
		{TrustDomain: otherTD, Roots: tree.Bundle, Federated: true,
			JWTAuthorities: []trust.JWTAuthority{fedKey, fedLater, fedExpired, unsupported}},
	}}
	logs := &logBuffer{}
	got := verifyJWTAuthorities(b, now, logs.logger(), nil)

	own := keyIDs(got[webID.TrustDomain()])
	if want := sortedIDs(good.auth.KeyID, expiring.auth.KeyID); !slices.Equal(own, want) {
		t.Errorf("own domain keeps %q, want %q (good and expiring, once each)", own, want)
	}
	for _, h := range got[webID.TrustDomain()] {
		leafExpiry := h.expires
		if h.auth.KeyID == good.auth.KeyID && (leafExpiry.IsZero() || leafExpiry.After(now.Add(time.Hour+time.Minute))) {
			t.Errorf("own authority without a published expiry expires at %v, want its certificate's NotAfter (about an hour)", leafExpiry)
		}
		if h.auth.KeyID == expiring.auth.KeyID && !h.expires.Equal(expiring.auth.ExpiresAt) {
			t.Errorf("expiring authority expires at %v, want %v", h.expires, expiring.auth.ExpiresAt)
		}
	}
	fed := got[otherTD]
	if len(fed) != 1 || fed[0].auth.KeyID != "federated-1" || !fed[0].expires.IsZero() {
		t.Errorf("federated domain keeps %+v, want federated-1 once, the copy without expiry (it outlives the other)", fed)
	}
	for _, kid := range []string{stranger.auth.KeyID, badKID.auth.KeyID, "x25519"} {
		logs.waitFor(t, "JWT authority rejected", kid, `"reason":"invalid"`)
	}
	for _, kid := range []string{expired.auth.KeyID, "federated-2"} {
		logs.waitFor(t, "JWT authority rejected", kid, `"reason":"expired"`)
	}

	// While held, an authority goes at its expiry; the earliest expiry
	// left is when to look again.
	next := pruneJWTAuthorities(got, now.Add(11*time.Minute), discardLogger())
	if own := keyIDs(got[webID.TrustDomain()]); !slices.Equal(own, []string{good.auth.KeyID}) {
		t.Errorf("after the expiring one's expiry the own domain keeps %q", own)
	}
	if next.IsZero() || next.After(now.Add(time.Hour+time.Minute)) {
		t.Errorf("next expiry %v, want the good authority's certificate's NotAfter", next)
	}
	pruneJWTAuthorities(got, now.Add(2*time.Hour), discardLogger())
	if _, ok := got[webID.TrustDomain()]; ok || len(got[otherTD]) != 1 {
		t.Errorf("after every expiry: %d own authorities, %d federated; want none and the one without expiry", len(got[webID.TrustDomain()]), len(got[otherTD]))
	}
}

func keyIDs(hs []heldJWT) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.auth.KeyID)
	}
	return out
}

func sortedIDs(ids ...string) []string { return slices.Sorted(slices.Values(ids)) }

func TestJWTCache(t *testing.T) {
	now := time.Now()
	iat := now.Add(-time.Minute)
	if got, want := jwtRefreshAt(iat, iat.Add(10*time.Minute)), iat.Add(5*time.Minute); !got.Equal(want) {
		t.Errorf("refresh at %v, want half the lifetime, %v", got, want)
	}
	var c jwtCache
	c.put("a", "token-a", now.Add(time.Minute), now)
	if tok, ok := c.get("a", now.Add(59*time.Second)); !ok || tok != "token-a" {
		t.Errorf("before its refresh time: %q %v", tok, ok)
	}
	if _, ok := c.get("a", now.Add(time.Minute)); ok {
		t.Error("served at its refresh time")
	}
	if _, ok := c.get("b", now); ok {
		t.Error("served a token never cached")
	}
	c.put("due", "token", now, now)
	if _, ok := c.get("due", now.Add(-time.Second)); ok {
		t.Error("cached a token already due")
	}
	for i := range 2 * maxJWTCacheEntries {
		c.put(string(rune('A'+i)), "t", now.Add(time.Minute), now)
	}
	if len(c.entries) > maxJWTCacheEntries {
		t.Errorf("cache holds %d entries, bound %d", len(c.entries), maxJWTCacheEntries)
	}
}

func TestCheckRequestedID(t *testing.T) {
	for _, tc := range []struct {
		name      string
		requested string
		own       spiffeid.ID
		want      error
	}{
		{"empty asks for the agent's", "", webID, nil},
		{"the agent's", webID.String(), webID, nil},
		{"another identity", "spiffe://cluster.local/ns/default/sa/db", webID, grpcx.ErrPermissionDenied},
		{"another trust domain", "spiffe://other.example/ns/default/sa/web", webID, grpcx.ErrPermissionDenied},
		{"not a SPIFFE ID", "web", webID, grpcx.ErrInvalidArgument},
		{"no identity yet", "", spiffeid.ID{}, grpcx.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRequestedID(tc.requested, tc.own)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("checkRequestedID(%q, %s) = %v, want %v", tc.requested, tc.own, err, tc.want)
			}
		})
	}
}
