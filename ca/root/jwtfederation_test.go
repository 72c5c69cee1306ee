package root

import (
	"context"
	"crypto"
	"crypto/x509"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// mintJWTSVID signs a JWT-SVID for sub under s's key, as an issuer does.
func (s jwtSigner) mint(t testing.TB, sub spiffeid.ID, now time.Time, aud ...string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.authority.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub.String(), Audience: aud,
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// jwtBundlesOf is what an agent of b validates JWT-SVIDs against: every
// trust domain's JWT authorities.
func jwtBundlesOf(b *trust.TrustBundle) *jwtbundle.Set {
	set := jwtbundle.NewSet()
	for _, d := range b.Domains {
		keys := map[string]crypto.PublicKey{}
		for _, a := range d.JWTAuthorities {
			keys[a.KeyID] = a.PublicKey
		}
		set.Add(jwtbundle.FromJWTAuthorities(d.TrustDomain, keys))
	}
	return set
}

// TestFederatedMeshValidatesJWTSVID: mesh A's issuer hands its JWT key to
// A's root; A's SPIFFE bundle endpoint serves it; mesh B's root fetches it
// and publishes it in A's federated entry of B's bundle, covered by B's
// signature; a JWT-SVID signed under A's key validates with go-spiffe
// against B's bundle. The token is minted here with the key, as A's issuer
// would.
func TestFederatedMeshValidatesJWTSVID(t *testing.T) {
	meshA := newHarness(t, nil)
	addr := meshA.serve()
	east := meshA.mustEnroll(addr, "east", "a.example")
	now := meshA.clock.Now()
	key := newJWTSigner(t, east, signerURI(t, "a.example", "east"), now, now.Add(time.Hour))
	client := meshcav1.NewRootServiceClient(meshA.dial(addr, east.tlsCert()))
	if _, err := client.PublishCRLs(context.Background(), jwtProtos(t, key.authority)); err != nil {
		t.Fatal(err)
	}

	tdA := spiffeid.RequireTrustDomainFromString("a.example")
	endpointID := spiffeid.RequireFromPath(tdA, "/meshca/bundle-endpoint")
	getCert, err := meshA.root.svidCertificate(endpointID)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := federation.NewEndpoint(federation.EndpointConfig{TrustDomain: tdA, Source: meshA.root,
		Profile: federation.ProfileHTTPSSPIFFE, SPIFFEID: endpointID, GetCertificate: getCert})
	if err != nil {
		t.Fatal(err)
	}
	lis := testkit.Listen(t)
	testkit.Go(t, "endpoint", func(ctx context.Context) error { return ep.Serve(ctx, lis) })
	var rootsA []*x509.Certificate
	for _, s := range meshA.root.Roots() {
		rootsA = append(rootsA, s.Cert)
	}
	fetcher, err := federation.NewFetcher(federation.FetcherConfig{Relationships: []federation.Relationship{{
		TrustDomain: tdA, URL: "https://" + lis.Addr().String() + "/", Profile: federation.ProfileHTTPSSPIFFE,
		EndpointSPIFFEID: endpointID, InitialBundle: spiffebundle.FromX509Authorities(tdA, rootsA),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fetcher.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}

	meshB := newHarness(t, func(c *Config) { c.Federated = fetcher; c.TrustDomains = []string{"b.example"} })
	b, _ := meshB.root.Current()
	d, ok := b.Domain(tdA)
	if !ok || !d.Federated || len(d.JWTAuthorities) != 1 || d.JWTAuthorities[0].KeyID != key.authority.KeyID ||
		len(d.JWTAuthorities[0].Chain) != 0 {
		t.Fatalf("B's bundle entry of a.example: %+v, want A's key, federated, without a chain", d)
	}
	wantBundleSigned(t, meshB, b)
	// The signature covers a federated domain's keys: swapping one breaks it.
	forged := *b
	forged.Domains = append([]trust.DomainBundle(nil), b.Domains...)
	for i := range forged.Domains {
		if forged.Domains[i].TrustDomain == tdA {
			forged.Domains[i].JWTAuthorities = []trust.JWTAuthority{{KeyID: key.authority.KeyID, PublicKey: newKey(t).Public()}}
		}
	}
	roots, err := trust.NewBundle(meshB.activeRoot())
	if err != nil {
		t.Fatal(err)
	}
	if err := forged.VerifySignature(roots, meshB.clock.Now()); err == nil {
		t.Fatal("B's signature still verifies with A's key swapped")
	}

	workload := spiffeid.RequireFromPath(tdA, "/ns/default/sa/client")
	svid, err := jwtsvid.ParseAndValidate(key.mint(t, workload, time.Now(), "b-service"), jwtBundlesOf(b), []string{"b-service"})
	if err != nil {
		t.Fatalf("A's JWT-SVID does not validate against B's bundle: %v", err)
	}
	if svid.ID != workload {
		t.Fatalf("validated ID %s, want %s", svid.ID, workload)
	}
	other := newJWTSigner(t, east, signerURI(t, "a.example", "east"), now, time.Time{})
	if _, err := jwtsvid.ParseAndValidate(other.mint(t, workload, time.Now(), "b-service"), jwtBundlesOf(b), []string{"b-service"}); err == nil {
		t.Fatal("a JWT-SVID under a key A never published validated against B's bundle")
	}
}
