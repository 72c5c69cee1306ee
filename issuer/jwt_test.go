package issuer_test

import (
	"context"
	"crypto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// jwtBundle returns the JWT bundle of td in tb: the domain's JWT
// authorities, each verified against roots at now first, as an agent does.
func jwtBundle(t testing.TB, tb *trust.TrustBundle, td spiffeid.TrustDomain, roots *trust.Bundle, now time.Time) *jwtbundle.Bundle {
	t.Helper()
	d, ok := tb.Domain(td)
	if !ok {
		t.Fatalf("bundle has no domain %s", td)
	}
	keys := map[string]crypto.PublicKey{}
	for _, a := range d.JWTAuthorities {
		if err := trust.VerifyJWTAuthority(a, td, roots, now); err != nil {
			t.Fatalf("served JWT authority %s does not verify: %v", a.KeyID, err)
		}
		keys[a.KeyID] = a.PublicKey
	}
	return jwtbundle.FromJWTAuthorities(td, keys)
}

// servedJWTBundle asks the wire's BundleService for the bundle and returns
// its JWT bundle of the wire's trust domain.
func (w *wire) servedJWTBundle(t testing.TB) *jwtbundle.Bundle {
	t.Helper()
	resp, err := w.bundles.GetBundle(t.Context(), &meshcav1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := trust.TrustBundleFromProto(resp.GetBundle())
	if err != nil {
		t.Fatal(err)
	}
	return jwtBundle(t, tb, w.tree.TrustDomain, w.tree.Bundle, time.Now())
}

func (w *wire) mintJWT(t testing.TB, md metadata.MD, req *meshcav1.MintJWTSVIDRequest) (*meshcav1.MintJWTSVIDResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 10*time.Second)
	defer cancel()
	return w.jwt.MintJWTSVID(ctx, req)
}

func TestGRPCMintJWTSVID(t *testing.T) {
	log, logs := captureLogs(t)
	w := newWireOptions(t, wireOptions{jwt: &issuer.JWTConfig{IssuerURL: "https://oidc.example/cluster.local"}, logger: log})
	md := bearer(w.token(t, attest.TokenSpec{}))
	aud := []string{"spiffe://cluster.local/ns/default/sa/db", "payments"}
	start := time.Now()
	resp, err := w.mintJWT(t, md, &meshcav1.MintJWTSVIDRequest{Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSpiffeId() != webID {
		t.Errorf("spiffe_id %q, want %q", resp.GetSpiffeId(), webID)
	}
	svid, err := jwtsvid.ParseAndValidate(resp.GetToken(), w.servedJWTBundle(t), []string{"payments"})
	if err != nil {
		t.Fatalf("the JWT-SVID does not validate against the served bundle: %v", err)
	}
	if svid.ID.String() != webID || !slices.Equal(svid.Audience, aud) || svid.Expiry.Unix() != resp.GetExpiresAtUnix() {
		t.Errorf("JWT-SVID sub %s aud %q exp %v; want %s, %q, %d", svid.ID, svid.Audience, svid.Expiry, webID, aud, resp.GetExpiresAtUnix())
	}
	if exp := svid.Expiry; exp.Before(start.Add(issuer.DefaultJWTTTL-time.Second)) || exp.After(time.Now().Add(issuer.DefaultJWTTTL)) {
		t.Errorf("exp %v, want the default lifetime %v from %v", exp, issuer.DefaultJWTTTL, start)
	}
	tok, err := jwt.ParseSigned(resp.GetToken(), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	h := tok.Headers[0]
	if h.Algorithm != "ES256" || h.ExtraHeaders[jose.HeaderType] != "JWT" || h.KeyID == "" {
		t.Errorf("header alg %q typ %v kid %q, want ES256, JWT and a key ID", h.Algorithm, h.ExtraHeaders[jose.HeaderType], h.KeyID)
	}
	if iss, _ := svid.Claims["iss"].(string); iss != "https://oidc.example/cluster.local" {
		t.Errorf("iss %q, want the configured issuer URL", iss)
	}
	if _, ok := svid.Claims["iat"]; !ok {
		t.Error("no iat claim")
	}

	long, err := w.mintJWT(t, md, &meshcav1.MintJWTSVIDRequest{Audience: aud[:1], TtlSeconds: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(time.Unix(long.GetExpiresAtUnix(), 0)); life > issuer.DefaultJWTMaxTTL || life < issuer.DefaultJWTMaxTTL-time.Minute {
		t.Errorf("a huge lifetime gave a token of %v, want it clamped to %v", life, issuer.DefaultJWTMaxTTL)
	}
	if _, err := jwtsvid.ParseAndValidate(long.GetToken(), w.servedJWTBundle(t), []string{"payments"}); err == nil {
		t.Error("a token validated for an audience it does not name")
	}

	if n := testkit.Value(testkit.Series(t, w.reg, issuer.JWTSVIDsMetric, "result", "OK")); n != 2 {
		t.Errorf("%s{result=OK} = %v, want 2", issuer.JWTSVIDsMetric, n)
	}
	if !strings.Contains(logs.String(), `"msg":"JWT-SVID issued"`) || !strings.Contains(logs.String(), `"spiffe_id":"`+webID+`"`) {
		t.Errorf("no JWT-SVID log line with the SPIFFE ID:\n%s", logs.String())
	}
	assertNoSecrets(t, logs.String(), resp.GetToken(), long.GetToken(), strings.Split(resp.GetToken(), ".")[2])
}

func TestGRPCMintJWTSVIDRefusals(t *testing.T) {
	w := newWireOptions(t, wireOptions{jwt: &issuer.JWTConfig{}})
	other, err := attest.LoadOrCreateDevSigner(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Mint(attest.TokenSpec{Namespace: "default", ServiceAccount: "web"})
	if err != nil {
		t.Fatal(err)
	}
	good := bearer(w.token(t, attest.TokenSpec{}))
	many := make([]string, issuer.MaxJWTAudiences+1)
	for i := range many {
		many[i] = "aud"
	}
	for _, tc := range []struct {
		name string
		md   metadata.MD
		req  *meshcav1.MintJWTSVIDRequest
		code codes.Code
		msg  string // the exact message for opaque codes, a substring otherwise
	}{
		{"no audience", good, &meshcav1.MintJWTSVIDRequest{}, codes.InvalidArgument, "at least one audience"},
		{"empty audience", good, &meshcav1.MintJWTSVIDRequest{Audience: []string{"a", ""}}, codes.InvalidArgument, "audience 1 is empty"},
		{"too many audiences", good, &meshcav1.MintJWTSVIDRequest{Audience: many}, codes.InvalidArgument, "at most 16"},
		{"audience too long", good, &meshcav1.MintJWTSVIDRequest{Audience: []string{strings.Repeat("a", issuer.MaxJWTAudienceBytes+1)}}, codes.InvalidArgument, "longer than"},
		{"negative lifetime", good, &meshcav1.MintJWTSVIDRequest{Audience: []string{"a"}, TtlSeconds: -1}, codes.InvalidArgument, "negative"},
		{"no authorization", metadata.MD{}, &meshcav1.MintJWTSVIDRequest{Audience: []string{"a"}}, codes.Unauthenticated, "authentication failed"},
		{"wrong signer", bearer(foreign), &meshcav1.MintJWTSVIDRequest{Audience: []string{"a"}}, codes.Unauthenticated, "authentication failed"},
		{"wrong token audience", bearer(w.token(t, attest.TokenSpec{Audiences: []string{"vault"}})), &meshcav1.MintJWTSVIDRequest{Audience: []string{"a"}}, codes.Unauthenticated, "authentication failed"},
		{"unknown cluster", metadata.Pairs("authorization", good.Get("authorization")[0], "clusterid", "west"), &meshcav1.MintJWTSVIDRequest{Audience: []string{"a"}}, codes.Unauthenticated, "authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := w.mintJWT(t, tc.md, tc.req)
			wantRefused(t, err, tc.code, tc.msg)
			if resp != nil {
				t.Error("a refused request got a token")
			}
		})
	}
	for code, want := range map[string]float64{"InvalidArgument": 5, "Unauthenticated": 4, "OK": 0} {
		if n := testkit.Value(testkit.Series(t, w.reg, issuer.JWTSVIDsMetric, "result", code)); n != want {
			t.Errorf("%s{result=%s} = %v, want %v", issuer.JWTSVIDsMetric, code, n, want)
		}
	}
}

func TestGRPCMintJWTSVIDRevokedIdentity(t *testing.T) {
	var dl *issuer.DenyList
	w := newWireOptions(t, wireOptions{jwt: &issuer.JWTConfig{}, deny: func(db *sqlite.Store) issuer.DenyChecker {
		dl = newDenyList(t, db, nil)
		return dl
	}})
	if err := dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	web, api := bearer(w.token(t, attest.TokenSpec{})), bearer(w.token(t, attest.TokenSpec{Namespace: "default", ServiceAccount: "api"}))
	req := &meshcav1.MintJWTSVIDRequest{Audience: []string{"payments"}}
	if _, err := w.mintJWT(t, web, req); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	if _, err := w.db.Revoke(t.Context(), store.Revocation{Kind: store.RevokeSPIFFEID, Value: webID, Cluster: "dev", RevokedBy: "test"},
		store.AuditEvent{Time: time.Now(), Actor: "test", Action: "revoke", SPIFFEID: webID}); err != nil {
		t.Fatal(err)
	}
	if err := dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	resp, err := w.mintJWT(t, web, req)
	if status.Code(err) != codes.PermissionDenied || resp != nil {
		t.Fatalf("a revoked identity got %v, %v; want PermissionDenied", resp, err)
	}
	if _, err := w.mintJWT(t, api, req); err != nil {
		t.Errorf("another identity was refused too: %v", err)
	}
	if n := testkit.Value(testkit.Series(t, w.reg, issuer.DeniedMetric, "reason", issuer.DeniedRevoked)); n != 1 {
		t.Errorf("%s{reason=revoked} = %v, want 1", issuer.DeniedMetric, n)
	}
}

func TestJWTConfigValidate(t *testing.T) {
	iss := newDenyingIssuer(t, testkit.New(t, testkit.Options{}), &fakeRecorder{}, nil)
	for name, c := range map[string]issuer.JWTConfig{
		"no issuer":             {},
		"default above max":     {Issuer: iss, DefaultTTL: 2 * time.Hour},
		"negative":              {Issuer: iss, MaxTTL: -time.Second},
		"http issuer URL":       {Issuer: iss, IssuerURL: "http://oidc.example"},
		"issuer URL with query": {Issuer: iss, IssuerURL: "https://oidc.example/?a=b"},
		"relative issuer URL":   {Issuer: iss, IssuerURL: "oidc.example"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := (issuer.JWTConfig{Issuer: iss, IssuerURL: "https://oidc.example/td"}).Validate(); err != nil {
		t.Errorf("a good config was refused: %v", err)
	}
}

// BenchmarkMintJWTSVID drives MintJWTSVID over TLS gRPC (JWKS attestation
// cached, as in production) from benchParallelism×GOMAXPROCS concurrent
// clients sharing one connection.
func BenchmarkMintJWTSVID(b *testing.B) {
	w := newWireOptions(b, wireOptions{cached: true, jwt: &issuer.JWTConfig{}})
	ctx := metadata.NewOutgoingContext(context.Background(), bearer(w.token(b, attest.TokenSpec{})))
	req := &meshcav1.MintJWTSVIDRequest{Audience: []string{"payments"}}
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := w.jwt.MintJWTSVID(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestWatchBundleSendsPreparedJWTKey: when the next intermediate is
// prepared, its JWT key reaches bundle watchers at once, in a bundle of
// the sequence they hold, before any token is signed with it.
func TestWatchBundleSendsPreparedJWTKey(t *testing.T) {
	w := newWireOptions(t, wireOptions{jwt: &issuer.JWTConfig{}})
	runInBackground(t, "JWTKeys.Run", w.keys.Run)
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(t.Context(), bearer(w.token(t, attest.TokenSpec{}))), 10*time.Second)
	defer cancel()
	stream, err := w.bundles.WatchBundle(ctx, &meshcav1.WatchBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *trust.TrustBundle {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		tb, err := trust.TrustBundleFromProto(resp.GetBundle())
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	kids := func(tb *trust.TrustBundle) []string {
		d, _ := tb.Domain(w.tree.TrustDomain)
		var out []string
		for _, a := range d.JWTAuthorities {
			if err := trust.VerifyJWTAuthority(a, w.tree.TrustDomain, w.tree.Bundle, time.Now()); err != nil {
				t.Errorf("served authority %s: %v", a.KeyID, err)
			}
			out = append(out, a.KeyID)
		}
		return out
	}
	first := recv()
	current := kids(first)
	if len(current) != 1 {
		t.Fatalf("first bundle has JWT keys %q, want the current intermediate's", current)
	}

	// The next intermediate, under the same root: the issuer holds it,
	// prepared, without signing with it.
	key := newKey(t)
	cert, err := w.tree.Root.SignIntermediate(ca.IntermediateRequest{PublicKey: &key.PublicKey, TrustDomain: w.tree.TrustDomain, Cluster: "test",
		ServingNames: testkit.TestServingNames, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	next, err := ca.NewAuthority(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	w.iss.SetPrepared(next)
	second := recv()
	got := kids(second)
	if second.Sequence != first.Sequence || len(got) != 2 || !slices.Contains(got, current[0]) {
		t.Fatalf("after preparing: sequence %d keys %q; want sequence %d with the current key and the prepared one", second.Sequence, got, first.Sequence)
	}
	resp, err := w.mintJWT(t, bearer(w.token(t, attest.TokenSpec{})), &meshcav1.MintJWTSVIDRequest{Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(resp.GetToken(), jwtBundle(t, second, w.tree.TrustDomain, w.tree.Bundle, time.Now()), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jwt.ParseSigned(resp.GetToken(), []jose.SignatureAlgorithm{jose.ES256})
	if kid := tok.Headers[0].KeyID; kid != current[0] || svid.ID.String() != webID {
		t.Errorf("signed with key %s before activation, want the current intermediate's %s", kid, current[0])
	}
}
