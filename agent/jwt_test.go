package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// jwtKey is a JWT-SVID signing key with its authority, as an issuer holds
// one: an ECDSA P-256 key certified by an intermediate as the JWT signer of
// its cluster.
type jwtKey struct {
	key  *ecdsa.PrivateKey
	auth trust.JWTAuthority
}

// newJWTKey makes a key certified by tree's intermediate (cluster "test"),
// its certificate valid for an hour; expiresAt (zero: none) is the
// authority's published expiry.
func newJWTKey(t testing.TB, tree *testkit.Tree, expiresAt time.Time) *jwtKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := trust.JWTSignerID(webID.TrustDomain(), "test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tree.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{signer.URL()}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := trust.JWTKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &jwtKey{key: key, auth: trust.JWTAuthority{KeyID: kid, PublicKey: key.Public(), ExpiresAt: expiresAt,
		Chain: [][]byte{cert.Raw, tree.Intermediate.Certificate.Raw}}}
}

// sign returns a JWT-SVID (ES256, kid, typ JWT) for sub and aud.
func (k *jwtKey) sign(sub spiffeid.ID, aud []string, iat, exp time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.auth.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(jwt.Claims{Subject: sub.String(), Audience: jwt.Audience(aud),
		IssuedAt: jwt.NewNumericDate(iat), Expiry: jwt.NewNumericDate(exp)}).Serialize()
}

func (k *jwtKey) mustSign(t testing.TB, aud ...string) string {
	t.Helper()
	now := time.Now()
	token, err := k.sign(webID, aud, now, now.Add(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// setJWTKey makes the issuer sign JWT-SVIDs with k (nil: it serves none).
func (fi *fakeIssuer) setJWTKey(k *jwtKey) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.jwtKey = k
}

// mintCount returns how many JWT-SVIDs the issuer signed.
func (fi *fakeIssuer) mintCount() int {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.mints
}

// holdMints holds every mint from now on until release is called;
// started receives one value per mint that reached the issuer.
func (fi *fakeIssuer) holdMints() (started <-chan struct{}, release func()) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	hold, st := make(chan struct{}), make(chan struct{}, 1024)
	fi.mintHold, fi.mintStarted = hold, st
	return st, func() {
		fi.mu.Lock()
		defer fi.mu.Unlock()
		fi.mintHold, fi.mintStarted = nil, nil
		close(hold)
	}
}

// MintJWTSVID signs a JWT-SVID for webID with the current key, for a
// caller with a bearer token, for the TTL asked (default 5 min).
func (fi *fakeIssuer) MintJWTSVID(ctx context.Context, req *meshcav1.MintJWTSVIDRequest) (*meshcav1.MintJWTSVIDResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	fi.mu.Lock()
	key, denied := fi.jwtKey, fi.jwtDenied
	fi.mu.Unlock()
	switch {
	case key == nil:
		return nil, status.Error(codes.Unimplemented, "no JWT key")
	case len(md.Get("authorization")) != 1 || !strings.HasPrefix(md.Get("authorization")[0], "Bearer "):
		return nil, status.Error(codes.Unauthenticated, "no token")
	case denied:
		return nil, status.Error(codes.PermissionDenied, "identity revoked")
	case len(req.GetAudience()) == 0:
		return nil, status.Error(codes.InvalidArgument, "no audience")
	}
	fi.mu.Lock()
	hold, started := fi.mintHold, fi.mintStarted
	fi.mu.Unlock()
	if hold != nil {
		started <- struct{}{}
		<-hold
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	now := time.Now()
	token, err := key.sign(webID, req.GetAudience(), now, now.Add(ttl))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	fi.mu.Lock()
	fi.mints++
	fi.mu.Unlock()
	return &meshcav1.MintJWTSVIDResponse{SpiffeId: webID.String(), Token: token, ExpiresAtUnix: now.Add(ttl).Unix()}, nil
}

// jwtFixture is a running agent whose issuer publishes JWT authorities in
// its (unsigned) own trust bundle.
type jwtFixture struct {
	tree *testkit.Tree
	fi   *fakeIssuer
	ra   *runningAgent
	reg  *prometheus.Registry
	seq  uint64
}

func newJWTFixture(t *testing.T, auths ...trust.JWTAuthority) *jwtFixture {
	t.Helper()
	f := &jwtFixture{tree: testkit.New(t, testkit.Options{}), reg: prometheus.NewRegistry()}
	f.fi = newFakeIssuer(t, f.tree, true)
	f.push(t, auths...)
	f.ra = startAgentWith(t, f.fi.addr, f.fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) { c.Registerer = f.reg })
	return f
}

// push publishes the own trust domain with auths as its JWT authorities.
func (f *jwtFixture) push(t *testing.T, auths ...trust.JWTAuthority) {
	t.Helper()
	f.seq++
	b := trustBundle(f.seq, "cluster.local", []*x509.Certificate{f.tree.Root.Certificate}, nil)
	for _, a := range auths {
		pa, err := a.ToProto()
		if err != nil {
			t.Fatal(err)
		}
		b.TrustDomains[0].JwtAuthorities = append(b.TrustDomains[0].JwtAuthorities, pa)
	}
	f.fi.pushBundle(b)
}

func (f *jwtFixture) addr() string { return "unix://" + f.ra.cfg.WorkloadSocket }

// source opens a JWTSource on the agent; it returns once the agent serves
// JWT bundles, which it does once it holds a certificate.
func (f *jwtFixture) source(t *testing.T) *workloadapi.JWTSource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	src, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(f.addr())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// waitJWTKeys waits until src's JWT bundle of the own trust domain holds
// exactly the key IDs kids.
func waitJWTKeys(t *testing.T, src *workloadapi.JWTSource, kids ...string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		b, err := src.GetJWTBundleForTrustDomain(webID.TrustDomain())
		if err == nil && sameKeys(b.JWTAuthorities(), kids) {
			return
		}
		select {
		case <-src.Updated():
		case <-deadline:
			t.Fatalf("JWTSource: the JWT bundle never held exactly %q", kids)
		}
	}
}

func sameKeys[V any](got map[string]V, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			return false
		}
	}
	return true
}

func validateCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// keyIDOf returns the "kid" of a compact JWS.
func keyIDOf(t testing.TB, token string) string {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Headers[0].KeyID
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
	}
}

// startJWTFixture is a running agent, its key pushed to its issuer, which
// mints JWT-SVIDs under k.
func startJWTFixture(t *testing.T) (*jwtFixture, *jwtKey) {
	t.Helper()
	tree := testkit.New(t, testkit.Options{})
	k := newJWTKey(t, tree, time.Time{})
	f := &jwtFixture{tree: tree, reg: prometheus.NewRegistry()}
	f.fi = newFakeIssuer(t, tree, true)
	f.fi.setJWTKey(k)
	f.push(t, k.auth)
	f.ra = startAgentWith(t, f.fi.addr, f.fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) { c.Registerer = f.reg })
	return f, k
}

// TestJWTSVIDFetchAndValidate fetches a JWT-SVID through the agent with
// go-spiffe's JWTSource, validates it through the agent and locally
// against the JWT bundle the agent serves, and checks what is refused.
func TestJWTSVIDFetchAndValidate(t *testing.T) {
	f, k := startJWTFixture(t)
	src := f.source(t)
	waitJWTKeys(t, src, k.auth.KeyID)
	ctx := validateCtx(t)

	svid, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "spiffe://cluster.local/ns/default/sa/db", ExtraAudiences: []string{"sts.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != webID || !slices.Equal(slices.Sorted(slices.Values(svid.Audience)), []string{"spiffe://cluster.local/ns/default/sa/db", "sts.example.com"}) {
		t.Errorf("JWT-SVID for %s, audiences %q", svid.ID, svid.Audience)
	}
	if kid := keyIDOf(t, svid.Marshal()); kid != k.auth.KeyID {
		t.Errorf("JWT-SVID signed under kid %q, want %q", kid, k.auth.KeyID)
	}
	if calls, tokens := f.fi.received(); calls == 0 || tokens != calls {
		t.Errorf("issuer saw %d calls, %d with a token: every call must carry the pod's token", calls, tokens)
	}

	// Cached per audience set, in any order, until half its life.
	again, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "sts.example.com", ExtraAudiences: []string{"spiffe://cluster.local/ns/default/sa/db", "sts.example.com"}},
		workloadapi.WithAddr(f.addr()))
	if err != nil {
		t.Fatal(err)
	}
	if again.Marshal() != svid.Marshal() || f.fi.mintCount() != 1 {
		t.Errorf("second fetch for the same audiences: same token %v, %d mints; want the cached one, 1 mint", again.Marshal() == svid.Marshal(), f.fi.mintCount())
	}

	got, err := workloadapi.ValidateJWTSVID(ctx, svid.Marshal(), "sts.example.com", workloadapi.WithAddr(f.addr()))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != webID || got.Claims["sub"] != webID.String() || got.Claims["exp"] == nil {
		t.Errorf("validated: %s, claims %v", got.ID, got.Claims)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), src, []string{"sts.example.com"}); err != nil {
		t.Errorf("the JWT bundle the agent serves does not validate its JWT-SVID: %v", err)
	}

	_, err = workloadapi.ValidateJWTSVID(ctx, svid.Marshal(), "other.example.com", workloadapi.WithAddr(f.addr()))
	wantCode(t, "validate for another audience", err, codes.InvalidArgument)
	unknown := newJWTKey(t, f.tree, time.Time{})
	_, err = workloadapi.ValidateJWTSVID(ctx, unknown.mustSign(t, "sts.example.com"), "sts.example.com", workloadapi.WithAddr(f.addr()))
	wantCode(t, "validate a token of a key not in the bundle", err, codes.InvalidArgument)

	_, err = src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a", Subject: spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/db")})
	wantCode(t, "fetch for another identity", err, codes.PermissionDenied)
	_, err = src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a", Subject: webID})
	if err != nil {
		t.Errorf("fetch naming the agent's own identity: %v", err)
	}

	f.fi.mu.Lock()
	f.fi.jwtDenied = true
	f.fi.mu.Unlock()
	_, err = src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "new-audience"})
	wantCode(t, "fetch after the issuer revoked the identity", err, codes.PermissionDenied)
}

// TestJWTSVIDRequestBounds sends what go-spiffe would not: requests
// without the security header, with an invalid spiffe_id, and beyond the
// size bounds.
func TestJWTSVIDRequestBounds(t *testing.T) {
	f := newJWTFixture(t)
	f.source(t) // the agent holds its certificate
	conn, err := grpc.NewClient(f.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx := validateCtx(t)
	many := make([]string, maxJWTAudiences+1)
	for i := range many {
		many[i] = strings.Repeat("a", i+1)
	}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
		code codes.Code
	}{
		{"no header", func(ctx context.Context) error {
			_, err := api.FetchJWTSVID(context.Background(), &workload.JWTSVIDRequest{Audience: []string{"a"}})
			return err
		}, codes.InvalidArgument},
		{"no audience", func(ctx context.Context) error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{})
			return err
		}, codes.InvalidArgument},
		{"empty audience", func(ctx context.Context) error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a", ""}})
			return err
		}, codes.InvalidArgument},
		{"too many audiences", func(ctx context.Context) error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: many})
			return err
		}, codes.InvalidArgument},
		{"audience too long", func(ctx context.Context) error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{strings.Repeat("a", maxJWTAudienceLen+1)}})
			return err
		}, codes.InvalidArgument},
		{"spiffe_id not a SPIFFE ID", func(ctx context.Context) error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}, SpiffeId: "web"})
			return err
		}, codes.InvalidArgument},
		{"svid too long", func(ctx context.Context) error {
			_, err := api.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: strings.Repeat("a", maxJWTSVIDLen+1)})
			return err
		}, codes.InvalidArgument},
		{"no svid", func(ctx context.Context) error {
			_, err := api.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a"})
			return err
		}, codes.InvalidArgument},
		{"validate without audience", func(ctx context.Context) error {
			_, err := api.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Svid: "a.b.c"})
			return err
		}, codes.InvalidArgument},
		{"issuer without a JWT key", func(ctx context.Context) error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
			return err
		}, codes.Unimplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.name, tc.call(withHeader(ctx)), tc.code)
		})
	}
}

// TestJWTBundlesDropTamperedAuthority publishes, beside a good authority,
// one whose key is not its certificate's and one certified under another
// root: the agent serves and validates with the good one only, and logs and
// counts the others.
func TestJWTBundlesDropTamperedAuthority(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	good := newJWTKey(t, tree, time.Time{})
	swapped := newJWTKey(t, tree, time.Time{})
	other := newJWTKey(t, tree, time.Time{})
	swapped.auth.Chain = good.auth.Chain // a key passed off under another key's certificate
	stranger := newJWTKey(t, testkit.New(t, testkit.Options{RootKey: "stranger"}), time.Time{})
	f := &jwtFixture{tree: tree, reg: prometheus.NewRegistry()}
	f.fi = newFakeIssuer(t, tree, true)
	f.push(t, good.auth, swapped.auth, stranger.auth)
	f.ra = startAgentWith(t, f.fi.addr, f.fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) { c.Registerer = f.reg })
	src := f.source(t)
	waitJWTKeys(t, src, good.auth.KeyID)
	f.ra.logs.waitFor(t, "JWT authority rejected", swapped.auth.KeyID, `"reason":"invalid"`)
	f.ra.logs.waitFor(t, "JWT authority rejected", stranger.auth.KeyID, `"reason":"invalid"`)
	if v, _ := metricValue(t, f.reg, jwtRejectedMetricName, "reason", jwtInvalid); v != 2 {
		t.Errorf("%s{reason=invalid} = %v, want 2", jwtRejectedMetricName, v)
	}
	ctx := validateCtx(t)
	if _, err := workloadapi.ValidateJWTSVID(ctx, good.mustSign(t, "x"), "x", workloadapi.WithAddr(f.addr())); err != nil {
		t.Errorf("token of the good authority: %v", err)
	}
	for name, k := range map[string]*jwtKey{"swapped key": swapped, "foreign chain": stranger, "never published": other} {
		_, err := workloadapi.ValidateJWTSVID(ctx, k.mustSign(t, "x"), "x", workloadapi.WithAddr(f.addr()))
		wantCode(t, name, err, codes.InvalidArgument)
	}
}

// TestJWTKeyRotation follows an issuer's key rotation: the new key is
// published beside the old one before it signs; then tokens of both
// validate; once the old key's published expiry passes, the agent drops it
// and its tokens no longer validate. Every change reaches a FetchJWTBundles
// stream.
func TestJWTKeyRotation(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	oldKey, newKey := newJWTKey(t, tree, time.Time{}), newJWTKey(t, tree, time.Time{})
	f := &jwtFixture{tree: tree, reg: prometheus.NewRegistry()}
	f.fi = newFakeIssuer(t, tree, true)
	f.fi.setJWTKey(oldKey)
	f.push(t, oldKey.auth)
	f.ra = startAgentWith(t, f.fi.addr, f.fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) { c.Registerer = f.reg })
	src := f.source(t)
	ctx := validateCtx(t)
	stream := openJWTBundles(t, f.addr())
	stream.next(t, oldKey.auth.KeyID)

	oldToken, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"})
	if err != nil {
		t.Fatal(err)
	}
	f.push(t, oldKey.auth, newKey.auth) // published before use
	stream.next(t, oldKey.auth.KeyID, newKey.auth.KeyID)
	waitJWTKeys(t, src, oldKey.auth.KeyID, newKey.auth.KeyID)
	f.fi.setJWTKey(newKey)
	newToken, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "cache"})
	if err != nil {
		t.Fatal(err)
	}
	if kid := keyIDOf(t, newToken.Marshal()); kid != newKey.auth.KeyID {
		t.Fatalf("after the switch the issuer signed with %q, want the new key", kid)
	}
	for name, token := range map[string]string{"old": oldToken.Marshal(), "new": newToken.Marshal()} {
		if _, err := workloadapi.ValidateJWTSVID(ctx, token, keyAudience(name), workloadapi.WithAddr(f.addr())); err != nil {
			t.Errorf("%s key's token during the rotation: %v", name, err)
		}
	}

	// The old key stays published until its last token can have expired;
	// here that is a second from now. A token it signed that claims to
	// live longer (no honest issuer makes one) shows that the key, not the
	// token, stopped validating.
	lateToken, err := oldKey.sign(webID, []string{"db"}, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	expiring := oldKey.auth
	expiring.ExpiresAt = time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
	f.push(t, expiring, newKey.auth)
	stream.next(t, newKey.auth.KeyID)
	if _, err := workloadapi.ValidateJWTSVID(ctx, lateToken, "db", workloadapi.WithAddr(f.addr())); status.Code(err) != codes.InvalidArgument {
		t.Errorf("token of the expired key: %v, want InvalidArgument", err)
	}
	if _, err := workloadapi.ValidateJWTSVID(ctx, newToken.Marshal(), "cache", workloadapi.WithAddr(f.addr())); err != nil {
		t.Errorf("new key's token after the old key expired: %v", err)
	}
}

func keyAudience(name string) string {
	if name == "old" {
		return "db"
	}
	return "cache"
}

// jwtBundleStream is a raw FetchJWTBundles stream on the agent; its
// responses arrive on resps, which is closed when the stream ends.
type jwtBundleStream struct {
	resps <-chan *workload.JWTBundlesResponse
	last  []byte // the own domain's JWKS last read
}

func openJWTBundles(t *testing.T, addr string) *jwtBundleStream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchJWTBundles(withHeader(ctx), &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resps := make(chan *workload.JWTBundlesResponse, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(resps)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			resps <- resp
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	return &jwtBundleStream{resps: resps}
}

// jwk is a JWKS key as the agent sends it.
type jwk struct {
	Kty, Crv, X, Y, Kid, Use string
}

// next reads responses until one whose own-domain JWKS holds exactly
// kids, each an EC P-256 key with "use":"jwt-svid", and fails after
// waitTimeout. The stream sends changes only: a response equal to the one
// before fails the test.
func (s *jwtBundleStream) next(t *testing.T, kids ...string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		var resp *workload.JWTBundlesResponse
		select {
		case r, ok := <-s.resps:
			if !ok {
				t.Fatal("FetchJWTBundles ended")
			}
			resp = r
		case <-deadline:
			t.Fatalf("FetchJWTBundles: no JWKS with exactly %q within %v", kids, waitTimeout)
		}
		raw := resp.GetBundles()[webID.TrustDomain().IDString()]
		if s.last != nil && string(raw) == string(s.last) {
			t.Errorf("FetchJWTBundles resent an unchanged JWKS: %s", raw)
		}
		s.last = raw
		var jwks struct{ Keys []jwk }
		if err := json.Unmarshal(raw, &jwks); err != nil {
			t.Fatalf("JWKS of %s: %v", webID.TrustDomain(), err)
		}
		got := map[string]bool{}
		for _, k := range jwks.Keys {
			if k.Kty != "EC" || k.Crv != "P-256" || k.X == "" || k.Y == "" || k.Use != jwtKeyUse {
				t.Errorf("JWK %+v, want an EC P-256 key with use %q", k, jwtKeyUse)
			}
			got[k.Kid] = true
		}
		if sameKeys(got, kids) {
			return
		}
	}
}
