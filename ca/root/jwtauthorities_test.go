package root

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

// jwtSigner is a JWT-SVID key of an issuer and its authority.
type jwtSigner struct {
	key       *ecdsa.PrivateKey
	authority trust.JWTAuthority
}

// newJWTSigner makes a JWT signer certificate for s's cluster, issued by
// s's intermediate for uri (trust.JWTSignerID(td, cluster) for a genuine
// one), valid until the intermediate expires, and its authority with
// expires (zero: the certificate decides).
func newJWTSigner(t testing.TB, s *issuerSide, uri string, now, expires time.Time) jwtSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), NotBefore: now.Add(-time.Minute), NotAfter: s.inter.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.inter, key.Public(), s.interKey)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := trust.JWTKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return jwtSigner{key: key, authority: trust.JWTAuthority{
		KeyID: kid, PublicKey: key.Public(), ExpiresAt: expires, Chain: [][]byte{der, s.inter.Raw},
	}}
}

// signerURI is the JWT signer identity of cluster in td.
func signerURI(t testing.TB, td, cluster string) string {
	t.Helper()
	id, err := trust.JWTSignerID(spiffeid.RequireTrustDomainFromString(td), cluster)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func jwtProtos(t testing.TB, as ...trust.JWTAuthority) *meshcav1.PublishCRLsRequest {
	t.Helper()
	req := &meshcav1.PublishCRLsRequest{}
	for _, a := range as {
		p, err := a.ToProto()
		if err != nil {
			t.Fatal(err)
		}
		req.JwtAuthorities = append(req.JwtAuthorities, p)
	}
	return req
}

// domainJWTs returns the JWT authorities of own trust domain td in r's
// current bundle.
func domainJWTs(t testing.TB, h *harness, td string) []trust.JWTAuthority {
	t.Helper()
	b, _ := h.root.Current()
	d, ok := b.Domain(spiffeid.RequireTrustDomainFromString(td))
	if !ok {
		t.Fatalf("no domain %s in bundle %d", td, b.Sequence)
	}
	return d.JWTAuthorities
}

// kids lists the key IDs of as.
func kids(as []trust.JWTAuthority) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.KeyID)
	}
	return out
}

// TestPublishJWTAuthorities: an issuer's JWT authority reaches its trust
// domain's entry in the signed bundle and stays there after the issuer
// stops naming it, until it expires; forged ones, another cluster's and
// workload certificates are refused with nothing changed and an audit
// event; revoking the cluster drops its keys.
func TestPublishJWTAuthorities(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	west := h.mustEnroll(addr, "west", "west.example")
	// north shares east's trust domain: an issuer of one cluster must
	// not publish keys of another even there.
	resp, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{Name: "north", TrustDomain: "east.example",
		ShareTrustDomain: true}, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	north, err := enroll(t, h.dial(addr, nil), resp.GetJoinToken())
	if err != nil {
		t.Fatal(err)
	}
	eastRoot := h.rootClient(addr, east)
	westRoot := h.rootClient(addr, west)
	northRoot := h.rootClient(addr, north)
	bg := context.Background()
	now := h.clock.Now()

	before, _ := h.root.Current()
	a := newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, now.Add(30*time.Minute))
	if _, err := eastRoot.PublishCRLs(bg, jwtProtos(t, a.authority)); err != nil {
		t.Fatalf("PublishCRLs with a JWT authority: %v", err)
	}
	got := domainJWTs(t, h, "east.example")
	if len(got) != 1 || got[0].KeyID != a.authority.KeyID || !got[0].ExpiresAt.Equal(a.authority.ExpiresAt) ||
		len(domainJWTs(t, h, "west.example")) != 0 {
		t.Fatalf("east.example JWT authorities %v, west.example %v; want east's key in east.example only",
			kids(got), kids(domainJWTs(t, h, "west.example")))
	}
	b1, _ := h.root.Current()
	if b1.Sequence <= before.Sequence {
		t.Fatalf("bundle sequence %d -> %d after a new JWT authority", before.Sequence, b1.Sequence)
	}
	wantBundleSigned(t, h, b1)
	ed, _ := b1.Domain(spiffeid.RequireTrustDomainFromString("east.example"))
	if err := trust.VerifyJWTAuthority(got[0], ed.TrustDomain, ed.Roots, now); err != nil {
		t.Fatalf("published JWT authority does not verify as a receiver checks it: %v", err)
	}
	// Over the wire too: the issuers' bundle watch gets it.
	if rt, err := trust.TrustBundleFromProto(b1.ToProto()); err != nil || !rt.Equal(b1) {
		t.Fatalf("bundle with JWT authorities does not survive the wire: %v", err)
	}

	// The same again, and a call naming no key: nothing changes.
	for _, req := range []*meshcav1.PublishCRLsRequest{jwtProtos(t, a.authority), {}} {
		if _, err := eastRoot.PublishCRLs(bg, req); err != nil {
			t.Fatal(err)
		}
		if b, _ := h.root.Current(); b != b1 {
			t.Fatal("republishing a kept JWT authority, or naming none, published a new bundle")
		}
	}

	// A key without an expiry of its own lives as long as its certificate.
	b := newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, time.Time{})
	if _, err := eastRoot.PublishCRLs(bg, jwtProtos(t, b.authority)); err != nil {
		t.Fatal(err)
	}
	got = domainJWTs(t, h, "east.example")
	if len(got) != 2 {
		t.Fatalf("JWT authorities %v, want both of east's", kids(got))
	}
	for _, g := range got {
		if g.KeyID == b.authority.KeyID && !g.ExpiresAt.Equal(east.inter.NotAfter) {
			t.Fatalf("key without expiry published with expiry %v, want its certificate's %v", g.ExpiresAt, east.inter.NotAfter)
		}
	}
	b2, _ := h.root.Current()
	wantBundleSigned(t, h, b2)

	refused := refusedJWTAuthorities(t, east, now)
	refusedEvents := len(h.events("jwt_authority.refuse"))
	for _, tc := range []struct {
		name   string
		client meshcav1.RootServiceClient
		req    *meshcav1.PublishCRLsRequest
	}{
		{"a key of another cluster of the trust domain", northRoot,
			jwtProtos(t, newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, time.Time{}).authority)},
		{"a key of another trust domain's cluster", westRoot, jwtProtos(t, newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, time.Time{}).authority)},
		{"a key for another cluster's identity", eastRoot, jwtProtos(t, refused["other identity"])},
		{"a forged chain", eastRoot, jwtProtos(t, refused["forged"])},
		{"a workload certificate as chain", eastRoot, jwtProtos(t, refused["workload"])},
		{"no intermediate in the chain", eastRoot, jwtProtos(t, refused["leaf alone"])},
		{"a key ID that does not name the key", eastRoot, jwtProtos(t, refused["wrong kid"])},
		{"an expiry past the certificate", eastRoot, jwtProtos(t, refused["outlives"])},
		{"one bad among good", eastRoot, jwtProtos(t, newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, time.Time{}).authority, refused["forged"])},
		{"too many", eastRoot, jwtProtos(t, tooManyJWTs(a.authority)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.PublishCRLs(bg, tc.req)
			wantCode(t, err, codes.InvalidArgument)
			if b, _ := h.root.Current(); b != b2 {
				t.Fatal("a refused PublishCRLs published a new bundle")
			}
		})
	}
	if n := len(h.events("jwt_authority.refuse")); n != refusedEvents+10 {
		t.Fatalf("%d refusal audit events, want %d", n, refusedEvents+10)
	}

	// Expiry prunes a, even though nothing was published since.
	h.clock.Advance(31 * time.Minute)
	h.refresh()
	if got := domainJWTs(t, h, "east.example"); len(got) != 1 || got[0].KeyID != b.authority.KeyID {
		t.Fatalf("after a expired: JWT authorities %v, want b's alone", kids(got))
	}
	b3, _ := h.root.Current()
	wantBundleSigned(t, h, b3)

	// Revoking the cluster drops its keys.
	if _, err := h.root.revoke(bg, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}}, "admin:test"); err != nil {
		t.Fatal(err)
	}
	if got := domainJWTs(t, h, "east.example"); len(got) != 0 {
		t.Fatalf("a revoked cluster's JWT authorities %v are still published", kids(got))
	}
}

func tooManyJWTs(a trust.JWTAuthority) []trust.JWTAuthority {
	out := make([]trust.JWTAuthority, maxJWTAuthoritiesPerCall+1)
	for i := range out {
		out[i] = a
	}
	return out
}

// refusedJWTAuthorities makes authorities east may not publish, by name.
func refusedJWTAuthorities(t *testing.T, east *issuerSide, now time.Time) map[string]trust.JWTAuthority {
	t.Helper()
	out := map[string]trust.JWTAuthority{}
	out["other identity"] = newJWTSigner(t, east, signerURI(t, "east.example", "west"), now, time.Time{}).authority
	// A certificate that names east's intermediate as its issuer, signed by
	// a key that is not the intermediate's.
	forger := *east
	fakeInter := *east.inter
	forger.interKey = newKey(t)
	fakeInter.PublicKey = forger.interKey.Public()
	forger.inter = &fakeInter
	out["forged"] = newJWTSigner(t, &forger, signerURI(t, "east.example", "east"), now, time.Time{}).authority
	out["workload"] = newJWTSigner(t, east, "spiffe://east.example/ns/default/sa/app", now, time.Time{}).authority
	leafAlone := newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, time.Time{}).authority
	leafAlone.Chain = leafAlone.Chain[:1]
	out["leaf alone"] = leafAlone
	wrongKid := newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, time.Time{}).authority
	wrongKid.KeyID = "not-the-key"
	out["wrong kid"] = wrongKid
	out["outlives"] = newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, east.inter.NotAfter.Add(time.Hour)).authority
	return out
}

// TestJWTAuthoritiesReachEveryReplica: an issuer hands its key to one root
// replica; another on the same store publishes it after its next
// re-evaluation, a root started afterwards at once, and a later expiry
// handed to the other replica reaches the first.
func TestJWTAuthoritiesReachEveryReplica(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	eastRoot := h.rootClient(addr, east)
	ctx := context.Background()
	other := h.replica()
	now := h.clock.Now()
	a := newJWTSigner(t, east, signerURI(t, "east.example", "east"), now, now.Add(20*time.Minute))
	if _, err := eastRoot.PublishCRLs(ctx, jwtProtos(t, a.authority)); err != nil {
		t.Fatalf("PublishCRLs: %v", err)
	}
	if got := domainJWTs(t, other, "east.example"); len(got) != 0 {
		t.Fatal("the other replica publishes the key before it re-evaluated")
	}
	h.clock.Advance(time.Second)
	other.refresh()
	if got := domainJWTs(t, other, "east.example"); len(got) != 1 || got[0].KeyID != a.authority.KeyID {
		t.Fatalf("the other replica publishes %v after its re-evaluation, want east's key", kids(got))
	}
	b, _ := other.root.Current()
	wantBundleSigned(t, other, b)
	if got := domainJWTs(t, h.replica(), "east.example"); len(got) != 1 {
		t.Fatal("a root started after the publication does not publish the stored key")
	}

	// The issuer retires the key later than first said, through the other
	// replica: the first follows.
	later := a.authority
	later.ExpiresAt = now.Add(40 * time.Minute)
	otherRoot := meshcav1.NewRootServiceClient(other.dial(other.serve(), east.tlsCert()))
	if _, err := otherRoot.PublishCRLs(ctx, jwtProtos(t, later)); err != nil {
		t.Fatalf("PublishCRLs to the other replica: %v", err)
	}
	h.clock.Advance(25 * time.Minute)
	h.refresh()
	if got := domainJWTs(t, h, "east.example"); len(got) != 1 || !got[0].ExpiresAt.Equal(later.ExpiresAt) {
		t.Fatalf("the first replica publishes %v, want the key until %v", got, later.ExpiresAt)
	}
	h.clock.Advance(20 * time.Minute)
	h.refresh()
	other.refresh()
	for name, r := range map[string]*harness{"first": h, "other": other} {
		if got := domainJWTs(t, r, "east.example"); len(got) != 0 {
			t.Fatalf("the %s replica still publishes the expired key", name)
		}
	}
}
