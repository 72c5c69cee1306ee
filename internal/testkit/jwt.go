package testkit

import (
	"crypto"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// JWTSVID signs a JWT-SVID for sub with audience aud under key (an ECDSA
// P-256 key) and key ID kid, issued at now and valid for five minutes, as an
// issuer mints one: ES256, typ JWT, kid in the header.
func JWTSVID(tb testing.TB, key crypto.Signer, kid string, sub spiffeid.ID, now time.Time, aud ...string) string {
	tb.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		tb.Fatalf("JWT signer: %v", err)
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub.String(), Audience: aud,
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}).Serialize()
	if err != nil {
		tb.Fatalf("sign JWT-SVID: %v", err)
	}
	return tok
}

// JWTBundles is what a relying party holding domains validates JWT-SVIDs
// against: each trust domain's JWT authorities as a go-spiffe bundle.
func JWTBundles(domains []trust.DomainBundle) *jwtbundle.Set {
	set := jwtbundle.NewSet()
	for _, d := range domains {
		keys := map[string]crypto.PublicKey{}
		for _, a := range d.JWTAuthorities {
			keys[a.KeyID] = a.PublicKey
		}
		set.Add(jwtbundle.FromJWTAuthorities(d.TrustDomain, keys))
	}
	return set
}
