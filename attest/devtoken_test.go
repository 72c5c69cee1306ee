package attest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreateDevSignerPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "dev")
	first, err := LoadOrCreateDevSigner(dir)
	if err != nil {
		t.Fatalf("create: %v", err)
	}

	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o700 {
		t.Errorf("dir mode = %o, want 700", perm)
	}
	path := filepath.Join(dir, "dev-token-key.pem")
	st, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %o, want 600", perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(b); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PKCS#8 PEM block")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the key (temp file left behind?)", len(entries))
	}

	restarted, err := LoadOrCreateDevSigner(dir)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if restarted.keyID() != first.keyID() {
		t.Fatalf("kid changed across restart: %s -> %s", first.keyID(), restarted.keyID())
	}
	if !restarted.key.Equal(first.key) {
		t.Fatalf("key changed across restart")
	}

	// A token minted before the restart validates against the reloaded key set.
	a, err := NewJWKS(JWKSConfig{
		Issuer: DevIssuer,
		Keys:   StaticKeys{Set: restarted.KeySet()},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.attestAt(context.Background(), Request{Token: mint(t, first, validSpec())}, testNow)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	want := Identity{Namespace: "default", ServiceAccount: "web", PodName: "web-0", PodUID: validSpec().PodUID, Expiry: testNow.Add(time.Hour)}
	if !sameIdentity(got, want) {
		t.Fatalf("Attest = %+v, want %+v", got, want)
	}
}

func TestLoadOrCreateDevSignerRejectsBadKeyFile(t *testing.T) {
	for name, content := range map[string]string{
		"not pem":   "hello",
		"not a key": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "dev-token-key.pem")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateDevSigner(dir); err == nil {
				t.Fatal("LoadOrCreateDevSigner accepted a bad key file")
			}
			b, err := os.ReadFile(path)
			if err != nil || string(b) != content {
				t.Fatalf("bad key file was modified (err %v)", err)
			}
		})
	}
}

// TestMintLayout pins the header and claim layout to a real projected token's.
func TestMintLayout(t *testing.T) {
	s := trustedSigner()
	tok := mint(t, s, validSpec())
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	decode := func(part string) map[string]any {
		t.Helper()
		b, err := base64.RawURLEncoding.DecodeString(part)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	hdr, claims := decode(parts[0]), decode(parts[1])

	if got := slices.Sorted(maps.Keys(hdr)); !slices.Equal(got, []string{"alg", "kid"}) {
		t.Errorf("header keys = %v, want [alg kid]", got)
	}
	if hdr["alg"] != "ES256" || hdr["kid"] != s.keyID() {
		t.Errorf("header = %v", hdr)
	}
	wantKeys := []string{"aud", "exp", "iat", "iss", "jti", "kubernetes.io", "nbf", "sub"}
	if got := slices.Sorted(maps.Keys(claims)); !slices.Equal(got, wantKeys) {
		t.Errorf("claim keys = %v, want %v", got, wantKeys)
	}
	checks := map[string]any{
		"iss": DevIssuer,
		"sub": "system:serviceaccount:default:web",
		"aud": []any{"meshca"}, // an array even with one element, as the API server emits
		"exp": float64(testNow.Add(time.Hour).Unix()),
		"nbf": float64(testNow.Unix()),
		"iat": float64(testNow.Unix()),
	}
	for k, want := range checks {
		if got, _ := json.Marshal(claims[k]); string(got) != string(must(json.Marshal(want))) {
			t.Errorf("claim %s = %s, want %v", k, got, want)
		}
	}
	k8s, _ := claims["kubernetes.io"].(map[string]any)
	sa, _ := k8s["serviceaccount"].(map[string]any)
	pod, _ := k8s["pod"].(map[string]any)
	if k8s["namespace"] != "default" || sa["name"] != "web" || sa["uid"] == "" || sa["uid"] == nil ||
		pod["name"] != "web-0" || pod["uid"] != validSpec().PodUID {
		t.Errorf("kubernetes.io = %v", k8s)
	}

	// The derived service-account uid is stable; jti is not.
	again := decode(strings.Split(mint(t, s, validSpec()), ".")[1])
	if again["kubernetes.io"].(map[string]any)["serviceaccount"].(map[string]any)["uid"] != sa["uid"] {
		t.Errorf("service account uid not stable across mints")
	}
	if again["jti"] == claims["jti"] {
		t.Errorf("jti repeated across mints")
	}
}

func TestMintDefaultsAndValidation(t *testing.T) {
	s := trustedSigner()
	a := newTestJWKS(t)
	// Default TTL is one hour and default audience is meshca.
	id, err := a.attestAt(context.Background(), Request{Token: mint(t, s, TokenSpec{Namespace: "ns", ServiceAccount: "sa", Now: testNow})}, testNow)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if !id.Expiry.Equal(testNow.Add(time.Hour)) || id.PodName != "" {
		t.Errorf("identity = %+v", id)
	}

	tests := []struct {
		name    string
		spec    TokenSpec
		wantErr string
	}{
		{"bad namespace", TokenSpec{Namespace: "Default", ServiceAccount: "sa"}, `invalid namespace "Default"`},
		{"empty service account", TokenSpec{Namespace: "ns"}, `invalid service account name ""`},
		{"negative ttl", TokenSpec{Namespace: "ns", ServiceAccount: "sa", TTL: -time.Second}, "negative ttl"},
		{"pod name without uid", TokenSpec{Namespace: "ns", ServiceAccount: "sa", PodName: "p"}, "pod name and uid"},
		{"pod uid without name", TokenSpec{Namespace: "ns", ServiceAccount: "sa", PodUID: "u"}, "pod name and uid"},
		{"bad pod name", TokenSpec{Namespace: "ns", ServiceAccount: "sa", PodName: "P", PodUID: "u"}, "invalid pod name"},
		{"empty audience", TokenSpec{Namespace: "ns", ServiceAccount: "sa", Audiences: []string{""}}, "empty audience"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := s.Mint(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Mint = %q, %v; want error %q", tok, err, tc.wantErr)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
