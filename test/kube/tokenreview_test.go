package kube

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/test/kubetest"
)

func TestValidPodBoundToken(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	tok := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	w := newWire(t, attest.NewCached(newTokenReview(t, c, "east", attest.TokenReviewConfig{}), attest.CacheConfig{}))

	leaf := w.mustIssue(t, tok, "", wl.spiffeID())
	rows := w.certRows(t)
	if len(rows) != 1 {
		t.Fatalf("%d certificate rows, want 1", len(rows))
	}
	if r := rows[0]; r.PodUID != string(wl.pod.UID) || r.SPIFFEID != wl.spiffeID() || r.Serial != leaf.SerialNumber.Text(16) {
		t.Errorf("row %+v, want pod uid %s, %s, serial %x", r, wl.pod.UID, wl.spiffeID(), leaf.SerialNumber)
	}
	// The same token again is served from the cache and is still recorded.
	w.mustIssue(t, tok, "", wl.spiffeID())
	if n := w.rows(t); n != 2 {
		t.Errorf("%d rows after two issuances", n)
	}
	w.requireTokensNotLogged(t, tok)
}

// TestTokenReviewIdentity checks what the attestor itself returns: the pod
// binding and the token's exp as the cache bound.
func TestTokenReviewIdentity(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	before := time.Now()
	tok := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	id, err := newTokenReview(t, c, "east", attest.TokenReviewConfig{}).Attest(context.Background(), attest.Request{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	want := attest.Identity{Cluster: "east", Namespace: wl.ns, ServiceAccount: wl.sa, PodName: wl.pod.Name, PodUID: string(wl.pod.UID)}
	exp := id.Expiry
	id.Expiry = time.Time{}
	if id != want {
		t.Errorf("identity %+v, want %+v", id, want)
	}
	if lo, hi := before.Add(55*time.Minute), time.Now().Add(61*time.Minute); exp.Before(lo) || exp.After(hi) {
		t.Errorf("Expiry %v, want the token's exp about one hour from now", exp)
	}
}

func TestWrongAudience(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	w := newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{}))
	vault := c.PodToken(t, wl.ns, wl.sa, wl.pod, "vault")
	w.mustFail(t, vault, "", codes.Unauthenticated)
	// The API server's own default audience is not ours either.
	apiAud := c.PodToken(t, wl.ns, wl.sa, wl.pod)
	w.mustFail(t, apiAud, "", codes.Unauthenticated)
	w.requireTokensNotLogged(t, vault, apiAud)
}

// issuedWorkload makes a workload in the shared cluster and a TokenReview
// issuer, and checks that the workload's pod-bound token is accepted.
func issuedWorkload(t *testing.T) (c *kubetest.Cluster, wl workload, tok string, w *wire) {
	t.Helper()
	c = east(t)
	wl = newWorkload(t, c)
	tok = c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	w = newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{}))
	w.mustIssue(t, tok, "", wl.spiffeID())
	return c, wl, tok, w
}

func TestDeletedPod(t *testing.T) {
	t.Parallel()
	c, wl, tok, w := issuedWorkload(t)
	c.DeletePod(t, wl.ns, wl.pod.Name)
	took := w.pollFail(t, tok, codes.Unauthenticated, 15*time.Second)
	t.Logf("token of a deleted pod rejected after %s", took)
	if n := w.rows(t); n != 1 {
		t.Errorf("%d rows, want only the one before deletion", n)
	}
}

func TestPodRecreatedUnderSameName(t *testing.T) {
	t.Parallel()
	c, wl, old, w := issuedWorkload(t)

	c.DeletePod(t, wl.ns, wl.pod.Name)
	again := c.Pod(t, wl.ns, wl.pod.Name, wl.sa)
	if again.UID == wl.pod.UID {
		t.Fatal("recreated pod kept its UID")
	}
	took := w.pollFail(t, old, codes.Unauthenticated, 15*time.Second)
	t.Logf("token of the previous pod rejected after %s", took)
	w.mustIssue(t, c.PodToken(t, wl.ns, wl.sa, again, audience), "", wl.spiffeID())
}

func TestTerminatingPod(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	// A finalizer keeps the deleted pod around, terminating.
	ctx := context.Background()
	pod, err := c.Admin.CoreV1().Pods(wl.ns).Get(ctx, wl.pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Finalizers = []string{"meshca.test/hold"}
	if _, err := c.Admin.CoreV1().Pods(wl.ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	w := newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{}))
	w.mustIssue(t, tok, "", wl.spiffeID())
	if err := c.Admin.CoreV1().Pods(wl.ns).Delete(ctx, wl.pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.pollFail(t, tok, codes.Unauthenticated, 15*time.Second)
	if !strings.Contains(w.logs(), "terminating") && !strings.Contains(w.logs(), "being deleted") {
		t.Errorf("log does not say the pod is terminating:\n%s", w.logs())
	}
}

func TestDeletedServiceAccount(t *testing.T) {
	t.Parallel()
	c, wl, tok, w := issuedWorkload(t)
	c.DeleteServiceAccount(t, wl.ns, wl.sa)
	// The API server caches successful reviews for about 10 s.
	took := w.pollFail(t, tok, codes.Unauthenticated, 30*time.Second)
	t.Logf("token of a deleted service account rejected after %s", took)
}

func TestUnboundToken(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	tok := c.Token(t, wl.ns, wl.sa, audience)
	required := newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{}))
	required.mustFail(t, tok, "", codes.Unauthenticated)
	if !strings.Contains(required.logs(), "not bound to a pod") {
		t.Errorf("log does not give the reason:\n%s", required.logs())
	}
	allowed := newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{AllowUnboundTokens: true}))
	allowed.mustIssue(t, tok, "", wl.spiffeID())
	if r := allowed.certRows(t)[0]; r.PodUID != "" {
		t.Errorf("unbound token recorded pod uid %q", r.PodUID)
	}
}

func TestGarbageTokens(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	good := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	parts := strings.Split(good, ".")
	random := make([]byte, 600)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	w := newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{}))
	for name, tok := range map[string]string{
		"garbage":          "garbage",
		"random base64":    base64.RawURLEncoding.EncodeToString(random),
		"alg none":         base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".",
		"tampered payload": parts[0] + "." + parts[1] + "x." + parts[2],
		"oversized":        strings.Repeat("a", attest.MaxTokenSize+1),
		"truncated":        good[:len(good)-10],
	} {
		t.Run(name, func(t *testing.T) {
			w.mustFail(t, tok, "", codes.Unauthenticated)
		})
	}
	w.requireTokensNotLogged(t, good)
}

func TestPolicyDeny(t *testing.T) {
	c := east(t)
	wl := newWorkload(t, c)
	tok := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	denied, err := attest.NewPolicy(newTokenReview(t, c, "east", attest.TokenReviewConfig{}),
		attest.PolicyConfig{Deny: []string{wl.ns + "/*"}})
	if err != nil {
		t.Fatal(err)
	}
	newWire(t, denied).mustFail(t, tok, "", codes.Unauthenticated)
	allowed, err := attest.NewPolicy(newTokenReview(t, c, "east", attest.TokenReviewConfig{}),
		attest.PolicyConfig{Allow: []string{"*/" + wl.sa}, Deny: []string{"kube-system/*"}})
	if err != nil {
		t.Fatal(err)
	}
	newWire(t, allowed).mustIssue(t, tok, "", wl.spiffeID())
}
