package root

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

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
	bundles := testkit.JWTBundles(b.Domains)
	tok := testkit.JWTSVID(t, key.key, key.authority.KeyID, workload, time.Now(), "b-service")
	svid, err := jwtsvid.ParseAndValidate(tok, bundles, []string{"b-service"})
	if err != nil {
		t.Fatalf("A's JWT-SVID does not validate against B's bundle: %v", err)
	}
	if svid.ID != workload {
		t.Fatalf("validated ID %s, want %s", svid.ID, workload)
	}
	other := newJWTSigner(t, east, signerURI(t, "a.example", "east"), now, time.Time{})
	tok = testkit.JWTSVID(t, other.key, other.authority.KeyID, workload, time.Now(), "b-service")
	if _, err := jwtsvid.ParseAndValidate(tok, bundles, []string{"b-service"}); err == nil {
		t.Fatal("a JWT-SVID under a key A never published validated against B's bundle")
	}
}
