package federation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// jwtKey is a JWT-SVID signing key of a mesh.
type jwtKey struct {
	priv *ecdsa.PrivateKey
	kid  string
}

func newJWTKey(tb testing.TB) jwtKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	kid, err := trust.JWTKeyID(k.Public())
	if err != nil {
		tb.Fatal(err)
	}
	return jwtKey{priv: k, kid: kid}
}

func (k jwtKey) authority() trust.JWTAuthority {
	return trust.JWTAuthority{KeyID: k.kid, PublicKey: k.priv.Public()}
}

// mint signs a JWT-SVID for sub with audience aud, as an issuer does.
func (k jwtKey) mint(tb testing.TB, sub spiffeid.ID, aud ...string) string {
	tb.Helper()
	return testkit.JWTSVID(tb, k.priv, k.kid, sub, time.Now(), aud...)
}

// publishJWT makes m's root server publish its roots and keys.
func (m *mesh) publishJWT(tb testing.TB, keys ...jwtKey) {
	tb.Helper()
	b, err := trust.NewBundle(m.rootCerts()...)
	if err != nil {
		tb.Fatal(err)
	}
	d := trust.DomainBundle{TrustDomain: m.td, Roots: b}
	for _, k := range keys {
		d.JWTAuthorities = append(d.JWTAuthorities, k.authority())
	}
	m.seq++
	m.src.set(&trust.TrustBundle{Sequence: m.seq, Domains: []trust.DomainBundle{d}})
}

// TestFederatedJWTSVIDs: mesh A's bundle endpoint serves A's JWT keys as
// jwt-svid keys; mesh B's fetcher holds them, so that a JWT-SVID A signed
// validates with go-spiffe against B's view; A's key rotation reaches B
// and the retired key stops validating once A drops it.
func TestFederatedJWTSVIDs(t *testing.T) {
	a := newMesh(t, "a")
	k1 := newJWTKey(t)
	a.publishJWT(t, k1)
	rel := Relationship{TrustDomain: a.td, Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: a.endpointID,
		InitialBundle: a.initialBundle(), URL: spiffeEndpoint(t, a, &certBox{}, nil).url}
	f, err := NewFetcher(FetcherConfig{Relationships: []Relationship{rel}, Logger: (&logBuffer{}).logger()})
	if err != nil {
		t.Fatal(err)
	}
	changed := f.Changed()
	if err := f.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !closed(changed) {
		t.Fatal("learning A's JWT keys did not announce a change")
	}
	d := f.Domains()
	if len(d) != 1 || len(d[0].JWTAuthorities) != 1 || d[0].JWTAuthorities[0].KeyID != k1.kid || len(d[0].JWTAuthorities[0].Chain) != 0 {
		t.Fatalf("B holds %+v, want A's one key without a chain", d)
	}
	if st := f.Status()[0]; st.JWTAuthorities != 1 {
		t.Errorf("status counts %d JWT authorities, want 1", st.JWTAuthorities)
	}
	workload := spiffeid.RequireFromPath(a.td, "/ns/default/sa/client")
	tok := k1.mint(t, workload, "b-service")
	svid, err := jwtsvid.ParseAndValidate(tok, testkit.JWTBundles(d), []string{"b-service"})
	if err != nil {
		t.Fatalf("A's JWT-SVID does not validate against B's view: %v", err)
	}
	if svid.ID != workload {
		t.Fatalf("validated ID %s, want %s", svid.ID, workload)
	}
	if _, err := jwtsvid.ParseAndValidate(newJWTKey(t).mint(t, workload, "b-service"), testkit.JWTBundles(d), []string{"b-service"}); err == nil {
		t.Fatal("a JWT-SVID under a key A never published validated")
	}

	// A prepares k2 (both published), then retires k1.
	k2 := newJWTKey(t)
	a.publishJWT(t, k1, k2)
	if err := f.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(k2.mint(t, workload, "b-service"), testkit.JWTBundles(f.Domains()), []string{"b-service"}); err != nil {
		t.Fatalf("a JWT-SVID under A's new key does not validate once published: %v", err)
	}
	a.publishJWT(t, k2)
	changed = f.Changed()
	if err := f.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !closed(changed) {
		t.Fatal("A dropping a key did not announce a change")
	}
	if _, err := jwtsvid.ParseAndValidate(tok, testkit.JWTBundles(f.Domains()), []string{"b-service"}); err == nil {
		t.Fatal("a JWT-SVID under A's retired key still validates after A dropped it")
	}
}

// TestEndpointServesJWTAuthorities: the SPIFFE bundle carries the own
// domain's JWT keys as jwt-svid keys and no federated domain's.
func TestEndpointServesJWTAuthorities(t *testing.T) {
	a := newMesh(t, "a")
	k := newJWTKey(t)
	a.publishJWT(t, k)
	e, err := NewEndpoint(EndpointConfig{TrustDomain: a.td, Source: a.src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: a.endpointID,
		GetCertificate: (&certBox{}).get, Logger: (&logBuffer{}).logger()})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if !strings.Contains(rec.Body.String(), `"use":"jwt-svid"`) {
		t.Errorf("bundle has no jwt-svid key: %s", rec.Body.String())
	}
	b, err := spiffebundle.Parse(a.td, rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got, ok := b.FindJWTAuthority(k.kid)
	if !ok || !k.priv.PublicKey.Equal(got) || len(b.JWTAuthorities()) != 1 {
		t.Fatalf("served JWT authorities %v, want the one key %s", b.JWTAuthorities(), k.kid)
	}
}

// TestOIDCDiscovery: with an issuer URL the endpoint serves the discovery
// document and a JWKS of the own domain's keys that go-jose parses, with
// caching headers, to GET and HEAD only; without one it serves neither.
func TestOIDCDiscovery(t *testing.T) {
	a := newMesh(t, "a")
	k1, k2 := newJWTKey(t), newJWTKey(t)
	a.publishJWT(t, k1, k2)
	const issuer = "https://oidc.a.example/mesh"
	newEndpoint := func(issuer string) *Endpoint {
		e, err := NewEndpoint(EndpointConfig{TrustDomain: a.td, Source: a.src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: a.endpointID,
			GetCertificate: (&certBox{}).get, OIDCIssuer: issuer, RefreshHint: time.Minute, Logger: (&logBuffer{}).logger()})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := newEndpoint(issuer)
	get := func(e *Endpoint, method, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec
	}

	rec := get(e, http.MethodGet, "/.well-known/openid-configuration")
	if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=60" ||
		rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("discovery: status %d, headers %v", rec.Code, rec.Header())
	}
	var doc struct {
		Issuer   string   `json:"issuer"`
		JWKSURI  string   `json:"jwks_uri"`
		Algs     []string `json:"id_token_signing_alg_values_supported"`
		Types    []string `json:"response_types_supported"`
		Subjects []string `json:"subject_types_supported"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Issuer != issuer || doc.JWKSURI != issuer+"/keys" || len(doc.Algs) != 1 || doc.Algs[0] != "ES256" ||
		len(doc.Types) != 1 || doc.Types[0] != "id_token" || len(doc.Subjects) != 1 || doc.Subjects[0] != "public" {
		t.Fatalf("discovery document %+v", doc)
	}

	rec = get(e, http.MethodGet, "/keys")
	if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=60" {
		t.Fatalf("keys: status %d, headers %v", rec.Code, rec.Header())
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatalf("go-jose does not parse the JWKS: %v", err)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want 2", len(set.Keys))
	}
	for _, k := range []jwtKey{k1, k2} {
		got := set.Key(k.kid)
		if len(got) != 1 || got[0].Use != "sig" || got[0].Algorithm != "ES256" || !got[0].Valid() ||
			!k.priv.PublicKey.Equal(got[0].Key) {
			t.Fatalf("JWKS key %s: %+v", k.kid, got)
		}
	}
	// A token signed by a published key verifies with the JWKS, as a
	// cloud's token service checks it.
	tok, err := jwt.ParseSigned(k2.mint(t, spiffeid.RequireFromPath(a.td, "/ns/default/sa/app"), "sts.example"),
		[]jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	if err := tok.Claims(set.Key(k2.kid)[0].Key, &claims); err != nil {
		t.Fatalf("token does not verify with the JWKS key: %v", err)
	}

	if rec := get(e, http.MethodHead, "/keys"); rec.Code != http.StatusOK {
		t.Errorf("HEAD /keys: status %d", rec.Code)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		if rec := get(e, m, "/keys"); rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s /keys: status %d, want 405", m, rec.Code)
		}
	}
	off := newEndpoint("")
	for _, p := range []string{"/.well-known/openid-configuration", "/keys"} {
		if rec := get(off, http.MethodGet, p); rec.Code != http.StatusNotFound {
			t.Errorf("without an issuer URL, GET %s: status %d, want 404", p, rec.Code)
		}
	}
	for _, bad := range []string{"http://a.example", "https://", "https://a.example/?x=1", "https://a.example/#f", "://"} {
		cfg := EndpointConfig{TrustDomain: a.td, Source: a.src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: a.endpointID,
			GetCertificate: (&certBox{}).get, OIDCIssuer: bad}
		if err := cfg.Validate(); err == nil {
			t.Errorf("issuer URL %q accepted", bad)
		}
	}
}
