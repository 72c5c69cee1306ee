package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testNow is the fixed "current time" of every test that does not move it.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testCluster = "c1"

// checkUnauthenticated fails t unless err is nil when wantErr is empty, and
// otherwise wraps ErrUnauthenticated and contains wantErr.
func checkUnauthenticated(t testing.TB, err error, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("err = %v, want ErrUnauthenticated containing %q", err, wantErr)
	}
}

// fakeAttestor is a hand-written Attestor that counts calls and answers with
// fn (or a fixed identity when fn is nil).
type fakeAttestor struct {
	mu    sync.Mutex
	calls int
	fn    func(Request) (Identity, error)
}

var _ Attestor = (*fakeAttestor)(nil)

func (f *fakeAttestor) Attest(_ context.Context, req Request) (Identity, error) {
	f.mu.Lock()
	f.calls++
	fn := f.fn
	f.mu.Unlock()
	if fn == nil {
		return Identity{Namespace: "ns", ServiceAccount: "sa"}, nil
	}
	return fn(req)
}

func (f *fakeAttestor) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// testSigners caches in-memory dev signers so tests do not regenerate keys.
var testSigners = sync.OnceValue(func() [2]*DevSigner {
	var out [2]*DevSigner
	for i := range out {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		if out[i], err = newDevSigner(k); err != nil {
			panic(err)
		}
	}
	return out
})

// trustedSigner signs tokens the test attestors accept; otherSigner does not.
func trustedSigner() *DevSigner { return testSigners()[0] }
func otherSigner() *DevSigner   { return testSigners()[1] }

// newTestJWKS returns an attestor trusting trustedSigner, for DevIssuer and
// testCluster; tests call its attestAt with the fixed time testNow.
func newTestJWKS(tb testing.TB) *JWKS {
	tb.Helper()
	a, err := NewJWKS(JWKSConfig{
		Issuer:  DevIssuer,
		Keys:    StaticKeys{Set: trustedSigner().KeySet()},
		Cluster: testCluster,
	})
	if err != nil {
		tb.Fatalf("NewJWKS: %v", err)
	}
	return a
}

// validSpec is a pod-bound token accepted by newTestJWKS.
func validSpec() TokenSpec {
	return TokenSpec{
		Namespace:      "default",
		ServiceAccount: "web",
		PodName:        "web-0",
		PodUID:         "7f1c1f6e-0000-4000-8000-000000000001",
		Now:            testNow,
	}
}

func mint(tb testing.TB, s *DevSigner, spec TokenSpec) string {
	tb.Helper()
	tok, err := s.Mint(spec)
	if err != nil {
		tb.Fatalf("Mint: %v", err)
	}
	return tok
}

// validClaims is the claim set of a valid token for newTestJWKS, as a map
// that cases can bend into shapes Mint refuses to produce.
func validClaims() map[string]any {
	return map[string]any{
		"iss": DevIssuer,
		"sub": "system:serviceaccount:default:web",
		"aud": []string{"meshca"},
		"exp": testNow.Add(time.Hour).Unix(),
		"nbf": testNow.Unix(),
		"iat": testNow.Unix(),
		"jti": "0b6f7c8e-2f43-4d8e-9e7a-1f0e4f8b9a01",
		"kubernetes.io": map[string]any{
			"namespace":      "default",
			"serviceaccount": map[string]any{"name": "web", "uid": "sa-uid"},
			"pod":            map[string]any{"name": "web-0", "uid": "pod-uid"},
		},
	}
}

// signClaims signs claims with key under alg; kid "" leaves it out of the
// header. extra adds protected header fields.
func signClaims(tb testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any, extra map[jose.HeaderKey]any) string {
	tb.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	opts := &jose.SignerOptions{ExtraHeaders: extra}
	sk := jose.SigningKey{Algorithm: alg, Key: key}
	if kid != "" {
		sk.Key = jose.JSONWebKey{Key: key, KeyID: kid}
	}
	signer, err := jose.NewSigner(sk, opts)
	if err != nil {
		tb.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// craftToken assembles a compact JWS by hand, for headers go-jose will not
// produce (alg none, HMAC with a public key).
func craftToken(tb testing.TB, header, claims map[string]any, sign func(signingInput string) []byte) string {
	tb.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	input := b64(h) + "." + b64(c)
	return input + "." + b64(sign(input))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// sameIdentity compares identities, treating equal instants as equal
// whatever their location.
func sameIdentity(a, b Identity) bool {
	ae, be := a.Expiry, b.Expiry
	a.Expiry, b.Expiry = time.Time{}, time.Time{}
	return a == b && ae.Equal(be)
}
