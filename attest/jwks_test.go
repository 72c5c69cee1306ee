package attest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.step.sm/crypto/pemutil"
)

func TestJWKSAttest(t *testing.T) {
	trusted, other := trustedSigner(), otherSigner()
	with := func(mod func(*TokenSpec)) TokenSpec {
		s := validSpec()
		mod(&s)
		return s
	}
	claimsWith := func(mod func(map[string]any)) map[string]any {
		c := validClaims()
		mod(c)
		return c
	}
	k8s := func(c map[string]any) map[string]any { return c["kubernetes.io"].(map[string]any) }

	// The classic confusion attack: HMAC keyed with the verifier's public key.
	pubBlock, err := pemutil.Serialize(&trusted.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(pubBlock)

	validIdentity := Identity{
		Cluster:        testCluster,
		Namespace:      "default",
		ServiceAccount: "web",
		PodName:        "web-0",
		PodUID:         "7f1c1f6e-0000-4000-8000-000000000001",
		Expiry:         testNow.Add(time.Hour),
	}

	tests := []struct {
		name    string
		req     Request
		keys    *jose.JSONWebKeySet // nil: trusted signer's set
		want    Identity
		wantErr string // reason substring; empty means success
	}{
		{
			name: "valid pod-bound token",
			req:  Request{Token: mint(t, trusted, validSpec())},
			want: validIdentity,
		},
		{
			name: "valid with matching cluster id",
			req:  Request{Token: mint(t, trusted, validSpec()), ClusterID: testCluster},
			want: validIdentity,
		},
		{
			name: "valid without pod binding",
			req:  Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.PodName, s.PodUID = "", "" }))},
			want: Identity{Cluster: testCluster, Namespace: "default", ServiceAccount: "web", Expiry: testNow.Add(time.Hour)},
		},
		{
			name: "valid without kid tries every key",
			req:  Request{Token: signClaims(t, jose.ES256, trusted.key, "", validClaims(), nil)},
			want: Identity{Cluster: testCluster, Namespace: "default", ServiceAccount: "web", PodName: "web-0", PodUID: "pod-uid", Expiry: testNow.Add(time.Hour)},
		},
		{
			name: "one of several audiences accepted",
			req:  Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.Audiences = []string{"api", "istio-ca"} }))},
			want: validIdentity,
		},
		{
			name: "expired within leeway accepted",
			req:  Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.Now, s.TTL = testNow.Add(-time.Hour-29*time.Second), time.Hour }))},
			want: func() Identity { id := validIdentity; id.Expiry = testNow.Add(-29 * time.Second); return id }(),
		},
		{
			name: "not yet valid within leeway accepted",
			req:  Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.Now = testNow.Add(29 * time.Second) }))},
			want: func() Identity { id := validIdentity; id.Expiry = testNow.Add(time.Hour + 29*time.Second); return id }(),
		},
		{
			name:    "wrong audience",
			req:     Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.Audiences = []string{"api"} }))},
			wantErr: `token audience "api" not accepted`,
		},
		{
			name:    "expired",
			req:     Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.Now = testNow.Add(-2 * time.Hour) }))},
			wantErr: "token expired at 2026-03-01T11:00:00Z",
		},
		{
			name:    "expired just beyond leeway",
			req:     Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.Now = testNow.Add(-time.Hour - 31*time.Second) }))},
			wantErr: "token expired at",
		},
		{
			name:    "not yet valid beyond leeway",
			req:     Request{Token: mint(t, trusted, with(func(s *TokenSpec) { s.Now = testNow.Add(31 * time.Second) }))},
			wantErr: "token not valid before 2026-03-01T12:00:31Z",
		},
		{
			name:    "issued in the future",
			req:     Request{Token: signClaims(t, jose.ES256, trusted.key, trusted.kid, claimsWith(func(c map[string]any) { c["iat"] = testNow.Add(time.Minute).Unix() }), nil)},
			wantErr: "token issued in the future",
		},
		{
			name:    "wrong signer with its own kid",
			req:     Request{Token: mint(t, other, validSpec())},
			wantErr: `no ES256 key with kid "` + other.kid + `"`,
		},
		{
			name:    "wrong signer claiming the trusted kid",
			req:     Request{Token: signClaims(t, jose.ES256, other.key, trusted.kid, validClaims(), nil)},
			wantErr: "token signature does not verify",
		},
		{
			name:    "wrong signer without kid",
			req:     Request{Token: signClaims(t, jose.ES256, other.key, "", validClaims(), nil)},
			wantErr: "token signature does not verify",
		},
		{
			name: "embedded jwk header is not trusted",
			req: Request{Token: signClaims(t, jose.ES256, other.key, "", validClaims(),
				map[jose.HeaderKey]any{"jwk": jose.JSONWebKey{Key: &other.key.PublicKey}})},
			wantErr: "token signature does not verify (kid \"\", 1 keys tried)",
		},
		{
			name: "alg none",
			req: Request{Token: craftToken(t, map[string]any{"alg": "none", "kid": trusted.kid}, validClaims(),
				func(string) []byte { return nil })},
			wantErr: `token algorithm "none" not allowed`,
		},
		{
			name: "HS256 keyed with the public key",
			req: Request{Token: craftToken(t, map[string]any{"alg": "HS256", "kid": trusted.kid}, validClaims(),
				func(input string) []byte {
					m := hmac.New(sha256.New, pubPEM)
					m.Write([]byte(input))
					return m.Sum(nil)
				})},
			wantErr: `token algorithm "HS256" not allowed`,
		},
		{
			name:    "key restricted to another algorithm",
			req:     Request{Token: mint(t, trusted, validSpec())},
			keys:    func() *jose.JSONWebKeySet { s := trusted.KeySet(); s.Keys[0].Algorithm = "RS256"; return s }(),
			wantErr: "no ES256 key with kid",
		},
		{
			name:    "encryption key not used for signatures",
			req:     Request{Token: mint(t, trusted, validSpec())},
			keys:    func() *jose.JSONWebKeySet { s := trusted.KeySet(); s.Keys[0].Use = "enc"; return s }(),
			wantErr: "no ES256 key with kid",
		},
		{
			name: "non-public keys in the set are skipped",
			req:  Request{Token: mint(t, trusted, validSpec())},
			keys: &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
				{Key: trusted.key, KeyID: trusted.kid},
				{Key: pubPEM, KeyID: trusted.kid},
			}},
			wantErr: "no ES256 key with kid",
		},
		{
			name:    "wrong issuer",
			req:     Request{Token: signClaims(t, jose.ES256, trusted.key, trusted.kid, claimsWith(func(c map[string]any) { c["iss"] = "https://kubernetes.default.svc" }), nil)},
			wantErr: `token issuer "https://kubernetes.default.svc" not accepted`,
		},
		{
			name:    "missing exp",
			req:     Request{Token: signClaims(t, jose.ES256, trusted.key, trusted.kid, claimsWith(func(c map[string]any) { delete(c, "exp") }), nil)},
			wantErr: "token has no expiry",
		},
		{
			name:    "subject and kubernetes.io namespace disagree",
			req:     Request{Token: signClaims(t, jose.ES256, trusted.key, trusted.kid, claimsWith(func(c map[string]any) { k8s(c)["namespace"] = "kube-system" }), nil)},
			wantErr: `kubernetes.io namespace "kube-system" does not match subject`,
		},
		{
			name: "subject and kubernetes.io service account disagree",
			req: Request{Token: signClaims(t, jose.ES256, trusted.key, trusted.kid, claimsWith(func(c map[string]any) {
				k8s(c)["serviceaccount"] = map[string]any{"name": "admin", "uid": "x"}
			}), nil)},
			wantErr: `kubernetes.io service account "admin" does not match subject`,
		},
		{
			name: "invalid namespace label",
			req: Request{Token: signClaims(t, jose.ES256, trusted.key, trusted.kid, claimsWith(func(c map[string]any) {
				c["sub"] = "system:serviceaccount:Default:web"
				k8s(c)["namespace"] = "Default"
			}), nil)},
			wantErr: `invalid namespace "Default"`,
		},
		{
			name:    "garbage",
			req:     Request{Token: "not-a-jwt"},
			wantErr: "malformed token",
		},
		{
			name:    "empty token",
			req:     Request{},
			wantErr: "empty token",
		},
		{
			name:    "oversized token",
			req:     Request{Token: strings.Repeat("a", MaxTokenSize+1)},
			wantErr: "token is 16385 bytes, limit 16384",
		},
		{
			name:    "unknown cluster",
			req:     Request{Token: mint(t, trusted, validSpec()), ClusterID: "c2"},
			wantErr: `unknown cluster "c2"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestJWKS(t)
			if tc.keys != nil {
				a.cfg.Keys = StaticKeys{Set: tc.keys}
			}
			got, err := a.attestAt(context.Background(), tc.req, testNow)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Attest: %v", err)
				}
				if !sameIdentity(got, tc.want) {
					t.Fatalf("Attest = %+v\nwant     %+v", got, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Attest error = %v, want ErrUnauthenticated", err)
			}
			if errors.Is(err, ErrUnavailable) {
				t.Fatalf("Attest error = %v also wraps ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Attest error = %q, want reason %q", err, tc.wantErr)
			}
			if got != (Identity{}) {
				t.Fatalf("Attest returned identity %+v with error", got)
			}
		})
	}
}

// keysFunc adapts a function to KeySource.
type keysFunc func(context.Context) (*jose.JSONWebKeySet, error)

func (f keysFunc) Keys(ctx context.Context) (*jose.JSONWebKeySet, error) { return f(ctx) }

func TestJWKSAttestKeySourceError(t *testing.T) {
	for name, keys := range map[string]KeySource{
		"fetch fails": keysFunc(func(context.Context) (*jose.JSONWebKeySet, error) {
			return nil, errors.New("connection refused")
		}),
		"nil set without error": keysFunc(func(context.Context) (*jose.JSONWebKeySet, error) { return nil, nil }),
		"nil static set":        StaticKeys{},
	} {
		t.Run(name, func(t *testing.T) {
			a := newTestJWKS(t)
			a.cfg.Keys = keys
			_, err := a.attestAt(context.Background(), Request{Token: mint(t, trustedSigner(), validSpec())}, testNow)
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Attest error = %v, want ErrUnavailable only", err)
			}
		})
	}
}

func TestJWKSConfigValidate(t *testing.T) {
	keys := StaticKeys{Set: trustedSigner().KeySet()}
	tests := []struct {
		name    string
		cfg     JWKSConfig
		wantErr string
	}{
		{name: "minimal", cfg: JWKSConfig{Issuer: DevIssuer, Keys: keys}},
		{name: "max leeway", cfg: JWKSConfig{Issuer: DevIssuer, Keys: keys, Leeway: maxLeeway}},
		{name: "missing issuer", cfg: JWKSConfig{Keys: keys}, wantErr: "issuer is required"},
		{name: "missing keys", cfg: JWKSConfig{Issuer: DevIssuer}, wantErr: "key source is required"},
		{name: "leeway too large", cfg: JWKSConfig{Issuer: DevIssuer, Keys: keys, Leeway: 61 * time.Second}, wantErr: "leeway 1m1s outside"},
		{name: "negative leeway", cfg: JWKSConfig{Issuer: DevIssuer, Keys: keys, Leeway: -time.Second}, wantErr: "leeway -1s outside"},
		{name: "alg none", cfg: JWKSConfig{Issuer: DevIssuer, Keys: keys, Algorithms: []jose.SignatureAlgorithm{"none"}}, wantErr: `algorithm "none" not allowed`},
		{name: "hmac", cfg: JWKSConfig{Issuer: DevIssuer, Keys: keys, Algorithms: []jose.SignatureAlgorithm{jose.ES256, jose.HS256}}, wantErr: `algorithm "HS256" not allowed`},
		{name: "empty audience", cfg: JWKSConfig{Issuer: DevIssuer, Keys: keys, Audiences: []string{""}}, wantErr: "empty audience"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewJWKS(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewJWKS: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewJWKS error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewJWKSDefaults(t *testing.T) {
	audiences := []string{"custom"}
	a, err := NewJWKS(JWKSConfig{Issuer: DevIssuer, Keys: StaticKeys{Set: trustedSigner().KeySet()}, Audiences: audiences})
	if err != nil {
		t.Fatal(err)
	}
	audiences[0] = "mutated"
	if a.cfg.Audiences[0] != "custom" {
		t.Errorf("attestor shares the caller's Audiences slice")
	}
	if a.cfg.Leeway != defaultLeeway || len(a.cfg.Algorithms) != len(asymmetricAlgorithms) {
		t.Errorf("defaults not applied: leeway %s, %d algorithms", a.cfg.Leeway, len(a.cfg.Algorithms))
	}

	a, err = NewJWKS(JWKSConfig{Issuer: DevIssuer, Keys: StaticKeys{Set: trustedSigner().KeySet()}, Cluster: testCluster})
	if err != nil {
		t.Fatal(err)
	}
	// Real clock, default audiences: a fresh token for istio-ca is accepted.
	tok := mint(t, trustedSigner(), TokenSpec{Namespace: "ns", ServiceAccount: "sa", Audiences: []string{"istio-ca"}})
	if _, err := a.Attest(context.Background(), Request{Token: tok}); err != nil {
		t.Fatalf("Attest with defaults: %v", err)
	}
}

func BenchmarkJWKSAttest(b *testing.B) {
	a := newTestJWKS(b)
	req := Request{Token: mint(b, trustedSigner(), validSpec())}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.attestAt(ctx, req, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
