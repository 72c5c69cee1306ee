package attest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/meshca/meshca/attest"
)

// Real attestors mark their failures with the reason a caller counts them
// by, and leave other invalid tokens unmarked; the text is unchanged.
func TestFailureReasons(t *testing.T) {
	signer, err := attest.LoadOrCreateDevSigner(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: signer.KeySet()}, Cluster: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := attest.NewPolicy(jwks, attest.PolicyConfig{Deny: []string{"kube-system/*"}})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(spec attest.TokenSpec) string {
		tok, err := signer.Mint(spec)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	reasons := []error{attest.ErrExpired, attest.ErrAudience, attest.ErrUnknownCluster, attest.ErrNotAllowed}
	for _, tt := range []struct {
		name string
		req  attest.Request
		want error // nil: unmarked
	}{
		{"expired", attest.Request{Token: mint(attest.TokenSpec{Namespace: "web", ServiceAccount: "a", TTL: time.Minute, Now: time.Now().Add(-time.Hour)})}, attest.ErrExpired},
		{"not yet valid", attest.Request{Token: mint(attest.TokenSpec{Namespace: "web", ServiceAccount: "a", Now: time.Now().Add(time.Hour)})}, attest.ErrExpired},
		{"audience", attest.Request{Token: mint(attest.TokenSpec{Namespace: "web", ServiceAccount: "a", Audiences: []string{"vault"}})}, attest.ErrAudience},
		{"unknown cluster", attest.Request{Token: mint(attest.TokenSpec{Namespace: "web", ServiceAccount: "a"}), ClusterID: "east"}, attest.ErrUnknownCluster},
		{"policy", attest.Request{Token: mint(attest.TokenSpec{Namespace: "kube-system", ServiceAccount: "a"})}, attest.ErrNotAllowed},
		{"malformed", attest.Request{Token: "not-a-token"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.Attest(t.Context(), tt.req)
			if !errors.Is(err, attest.ErrUnauthenticated) {
				t.Fatalf("err = %v, want ErrUnauthenticated", err)
			}
			for _, r := range reasons {
				if got := errors.Is(err, r); got != (r == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, r, got)
				}
			}
		})
	}
}
