package kube

import (
	"context"
	"errors"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/kubetest"
)

// TestAPIServerOutage stops a cluster's API server under a running issuer:
// tokens it has not attested yet fail with Unavailable and leave no row;
// when the API server returns, issuance recovers without touching the
// issuer.
func TestAPIServerOutage(t *testing.T) {
	t.Parallel()
	c := kubetest.Start(t, kubetest.Options{Name: "outage"})
	wl := newWorkload(t, c)
	seen := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	fresh := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	w := newWire(t, attest.NewCached(newTokenReview(t, c, "east", attest.TokenReviewConfig{}), attest.CacheConfig{TTL: 5 * time.Minute}))
	w.mustIssue(t, seen, "", wl.spiffeID())

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	w.mustFail(t, fresh, "", codes.Unavailable)
	w.mustFail(t, fresh, "", codes.Unavailable) // and again: failures are not cached
	// A token attested before the outage is served from the cache until its
	// cache TTL ends: the cache trades revocation latency for availability.
	w.mustIssue(t, seen, "", wl.spiffeID())

	if err := c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := w.issue(t, fresh, "")
		if err == nil {
			break
		}
		if code := status.Code(err); code != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("after the API server returned: %v (want recovery within 60s)", err)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
	if n := w.rows(t); n != 3 {
		t.Errorf("%d rows, want 3 (before, cached during, after)", n)
	}
}

// TestJWKSOutageAndKeyRotation: the JWKS mode keeps verifying while the
// API server is away, until its keys are older than RefreshInterval +
// MaxStale; and after the API server comes back signing with a rotated
// key, a token with the new key ID makes it refetch.
func TestJWKSOutageAndKeyRotation(t *testing.T) {
	t.Parallel()
	c := kubetest.Start(t, kubetest.Options{Name: "rotation"})
	wl := newWorkload(t, c)
	seen := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	fresh := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	ctx := context.Background()
	clock := testkit.NewClock(time.Now())
	keys, err := attest.NewRemoteKeys(attest.RemoteKeysConfig{
		Client: c.Admin, RefreshInterval: time.Minute, MaxStale: time.Hour, MinRefreshInterval: 10 * time.Second, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := attest.NewJWKS(attest.JWKSConfig{Issuer: kubetest.Issuer, Keys: keys, Audiences: []string{audience}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwks.Attest(ctx, attest.Request{Token: seen}); err != nil {
		t.Fatal(err)
	}
	first, _ := keys.Keys(ctx)

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if id, err := jwks.Attest(ctx, attest.Request{Token: fresh}); err != nil || id.PodUID != string(wl.pod.UID) {
		t.Errorf("JWKS during the outage: %+v, %v", id, err)
	}
	// Refresh due but failing: the previous keys are kept until MaxStale,
	// then the attestor fails closed with ErrUnavailable.
	clock.Advance(2 * time.Minute)
	if got, err := keys.Keys(ctx); err != nil || got != first {
		t.Errorf("stale keys during the outage: %v, %v", got, err)
	}
	waitKeys(t, keys, clock, func(err error) bool { return err != nil }, 2*time.Hour)
	if _, err := jwks.Attest(ctx, attest.Request{Token: fresh}); !errors.Is(err, attest.ErrUnavailable) {
		t.Errorf("JWKS with keys past MaxStale: %v, want ErrUnavailable", err)
	}

	if err := c.RotateSigningKey(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	waitKeys(t, keys, clock, func(err error) bool { return err == nil }, time.Minute)
	rotated := c.PodToken(t, wl.ns, wl.sa, wl.pod, audience)
	// The key set just fetched may already hold the new key; make the
	// attestor hold the pre-rotation set again to exercise the refetch.
	old, err := attest.NewJWKS(attest.JWKSConfig{Issuer: kubetest.Issuer, Keys: &primedKeys{RemoteKeys: keys, set: first}, Audiences: []string{audience}})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(11 * time.Second) // past MinRefreshInterval
	if _, err := old.Attest(ctx, attest.Request{Token: rotated}); err != nil {
		t.Errorf("token signed with the rotated key: %v", err)
	}
	if _, err := jwks.Attest(ctx, attest.Request{Token: seen}); err != nil {
		t.Errorf("token signed with the previous key after rotation: %v", err)
	}
}

// waitKeys moves the clock by advance once, then polls keys.Keys (moving
// the clock past MinRefreshInterval between tries, for at most 30 s of real
// time) until done accepts its error.
func waitKeys(t *testing.T, keys *attest.RemoteKeys, clock *testkit.Clock, done func(error) bool, advance time.Duration) {
	t.Helper()
	clock.Advance(advance)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := keys.Keys(context.Background())
		if done(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote keys: last result %v", err)
		}
		clock.Advance(11 * time.Second)
		time.Sleep(100 * time.Millisecond) // poll interval for the background fetch
	}
}

// primedKeys answers Keys with a fixed (old) set and refreshes through the
// real RemoteKeys, like a RemoteKeys that fetched before a rotation.
type primedKeys struct {
	*attest.RemoteKeys
	set *jose.JSONWebKeySet
}

func (p *primedKeys) Keys(context.Context) (*jose.JSONWebKeySet, error) { return p.set, nil }
