package kube

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/test/kubetest"
)

// newRemoteJWKS is the JWKS attestor in production mode: keys fetched from
// the cluster's /openid/v1/jwks.
func newRemoteJWKS(tb testing.TB, c *kubetest.Cluster, name string) *attest.JWKS {
	tb.Helper()
	keys, err := attest.NewRemoteKeys(attest.RemoteKeysConfig{Client: c.Admin})
	if err != nil {
		tb.Fatal(err)
	}
	a, err := attest.NewJWKS(attest.JWKSConfig{Issuer: kubetest.Issuer, Keys: keys, Audiences: []string{audience}, Cluster: name})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// TestJWKSProductionMode shows both sides of the trade-off: tokens verify
// locally with keys from the API server, and a deleted pod's token keeps
// verifying until it expires, which TokenReview does not allow.
func TestJWKSProductionMode(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	tok := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	jwks := newRemoteJWKS(t, c, "east")
	w := newWire(t, jwks)
	w.mustIssue(t, tok, "", wl.spiffeID())
	if r := w.certRows(t)[0]; r.PodUID != string(wl.pod.UID) {
		t.Errorf("row pod uid %q, want %s", r.PodUID, wl.pod.UID)
	}
	w.mustFail(t, c.PodToken(t, wl.ns, wl.sa, wl.pod, "vault"), "", codes.Unauthenticated)
	w.mustFail(t, "garbage", "", codes.Unauthenticated)

	c.DeletePod(t, wl.ns, wl.pod.Name)
	tr := newTokenReview(t, c, "east", attest.TokenReviewConfig{})
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := tr.Attest(ctx, attest.Request{Token: tok})
		if errors.Is(err, attest.ErrUnauthenticated) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TokenReview still accepts the deleted pod's token: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
	// The documented limit of JWKS mode: still valid, until exp.
	w.mustIssue(t, tok, "", wl.spiffeID())
}
