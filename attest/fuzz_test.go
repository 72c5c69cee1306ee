package attest

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// fuzzKey is deterministic so that the committed seed corpus can hold a token
// that really verifies (Ed25519 signatures are deterministic too).
var fuzzKey = ed25519.NewKeyFromSeed([]byte("meshca attest fuzz seed key 0001"))

const fuzzKID = "fuzz-ed25519"

// newFuzzJWKS trusts fuzzKey and trustedSigner; its tokens are checked at
// the fixed time testNow (attestAt).
func newFuzzJWKS(tb testing.TB) *JWKS {
	tb.Helper()
	set := trustedSigner().KeySet()
	set.Keys = append(set.Keys, jose.JSONWebKey{Key: fuzzKey.Public(), KeyID: fuzzKID, Algorithm: string(jose.EdDSA), Use: "sig"})
	a, err := NewJWKS(JWKSConfig{
		Issuer:  DevIssuer,
		Keys:    StaticKeys{Set: set},
		Cluster: testCluster,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// FuzzJWKSAttest checks that no token makes Attest panic, that every
// rejection wraps ErrUnauthenticated (the key source cannot fail here), and
// that every acceptance carries a well-formed identity.
func FuzzJWKSAttest(f *testing.F) {
	valid := signClaims(f, jose.ES256, trustedSigner().key, trustedSigner().keyID(), validClaims(), nil)
	f.Add(valid)
	f.Add(mint(f, trustedSigner(), validSpec()))
	f.Add(valid[:len(valid)/2])
	f.Add(strings.Replace(valid, ".", "..", 1))
	f.Add("e30.e30.")
	f.Add("eyJhbGciOiJFZERTQSJ9.bnVsbA.")

	a := newFuzzJWKS(f)
	f.Fuzz(func(t *testing.T, token string) {
		id, err := a.attestAt(context.Background(), Request{Token: token}, testNow)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated only", err)
			}
			if id != (Identity{}) {
				t.Fatalf("identity %+v returned with error", id)
			}
			return
		}
		if !isDNS1123Label(id.Namespace) || !isDNS1123Label(id.ServiceAccount) ||
			id.Cluster != testCluster || id.Expiry.IsZero() || (id.PodName == "") != (id.PodUID == "") {
			t.Fatalf("accepted malformed identity %+v", id)
		}
	})
}

// TestFuzzCorpusValidSeed keeps the committed "valid" seed meaningful: it must
// still be accepted, so the fuzzer starts from a token that reaches the
// claims parser.
func TestFuzzCorpusValidSeed(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzJWKSAttest", "valid-eddsa"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("corpus file is not in go test fuzz v1 format: %q", b)
	}
	arg, ok := strings.CutPrefix(lines[1], "string(")
	arg, ok2 := strings.CutSuffix(arg, ")")
	if !ok || !ok2 {
		t.Fatalf("corpus value is not a string: %q", lines[1])
	}
	token, err := strconv.Unquote(arg)
	if err != nil {
		t.Fatal(err)
	}
	id, err := newFuzzJWKS(t).attestAt(context.Background(), Request{Token: token}, testNow)
	if err != nil {
		t.Fatalf("valid seed rejected: %v", err)
	}
	if id.Namespace != "default" || id.ServiceAccount != "web" {
		t.Fatalf("valid seed identity = %+v", id)
	}
}

// TestWriteFuzzSeeds regenerates the committed seed corpus. Run it with
// MESHCA_WRITE_FUZZ_SEEDS=1 go test ./attest -run TestWriteFuzzSeeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("MESHCA_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set MESHCA_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz/FuzzJWKSAttest")
	}
	valid := signClaims(t, jose.EdDSA, fuzzKey, fuzzKID, validClaims(), nil)
	seeds := map[string]string{
		"valid-eddsa": valid,
		"alg-none": craftToken(t, map[string]any{"alg": "none", "kid": fuzzKID}, validClaims(),
			func(string) []byte { return nil }),
		"garbage":   "\x00\xffnot.a\njwt",
		"truncated": valid[:len(valid)-20],
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzJWKSAttest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, tok := range seeds {
		data := "go test fuzz v1\nstring(" + strconv.Quote(tok) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzParseClaims reaches the claims parser directly, past the signature
// check that shields it in FuzzJWKSAttest.
func FuzzParseClaims(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"aud":null,"exp":1e300}`))
	f.Add(must(json.Marshal(validClaims())))
	cfg := JWKSConfig{Issuer: DevIssuer, Cluster: testCluster}.withDefaults()
	f.Fuzz(func(t *testing.T, payload []byte) {
		id, err := parseClaims(payload, &cfg, testNow)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			return
		}
		if !isDNS1123Label(id.Namespace) || !isDNS1123Label(id.ServiceAccount) ||
			id.Expiry.Add(cfg.Leeway).Before(testNow) || (id.PodName == "") != (id.PodUID == "") {
			t.Fatalf("accepted malformed identity %+v from %q", id, payload)
		}
	})
}
