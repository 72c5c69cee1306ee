package attest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

func TestCachedHit(t *testing.T) {
	next := &fakeAttestor{}
	c := NewCached(next, CacheConfig{})
	ctx := context.Background()

	for i := range 3 {
		id, err := c.Attest(ctx, Request{Token: "t1"})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if id.Namespace != "ns" || id.ServiceAccount != "sa" {
			t.Fatalf("call %d: identity %+v", i, id)
		}
	}
	if got := next.Calls(); got != 1 {
		t.Fatalf("next called %d times for one token, want 1", got)
	}

	// The cluster is part of the key: the same token from another cluster is
	// a different question.
	if _, err := c.Attest(ctx, Request{Token: "t1", ClusterID: "c2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Attest(ctx, Request{Token: "t2"}); err != nil {
		t.Fatal(err)
	}
	if got := next.Calls(); got != 3 {
		t.Fatalf("next called %d times, want 3", got)
	}
}

func TestCacheKeyUnambiguous(t *testing.T) {
	pairs := [][2]Request{
		{{ClusterID: "ab", Token: "c"}, {ClusterID: "a", Token: "bc"}},
		{{ClusterID: "c2", Token: "t"}, {ClusterID: "c3", Token: "t"}},
		{{Token: "t"}, {Token: "u"}},
	}
	for _, p := range pairs {
		if cacheKey(p[0]) == cacheKey(p[1]) {
			t.Errorf("requests %+v and %+v share a cache key", p[0], p[1])
		}
	}
}

func TestCachedExpiry(t *testing.T) {
	const ttl = 5 * time.Minute
	tests := []struct {
		name      string
		expiresIn time.Duration // identity expiry relative to attestation; 0 = unknown
		validFor  time.Duration // how long a hit is expected
	}{
		{name: "ttl bounds", expiresIn: time.Hour, validFor: ttl},
		{name: "unknown expiry uses ttl", expiresIn: 0, validFor: ttl},
		{name: "token expiry bounds", expiresIn: time.Minute, validFor: time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				next := &fakeAttestor{fn: func(Request) (Identity, error) {
					id := Identity{Namespace: "ns", ServiceAccount: "sa"}
					if tc.expiresIn != 0 {
						id.Expiry = time.Now().Add(tc.expiresIn)
					}
					return id, nil
				}}
				c := NewCached(next, CacheConfig{TTL: ttl})
				req := Request{Token: "tok"}
				attest := func() {
					t.Helper()
					if _, err := c.Attest(context.Background(), req); err != nil {
						t.Fatal(err)
					}
				}

				attest()
				time.Sleep(tc.validFor - time.Nanosecond)
				attest()
				if got := next.Calls(); got != 1 {
					t.Fatalf("just before %s: next called %d times, want 1", tc.validFor, got)
				}
				time.Sleep(time.Nanosecond)
				attest()
				if got := next.Calls(); got != 2 {
					t.Fatalf("at %s: next called %d times, want 2 (stale entry served)", tc.validFor, got)
				}
				// The refreshed entry is served again.
				attest()
				if got := next.Calls(); got != 2 {
					t.Fatalf("after refresh: next called %d times, want 2", got)
				}
			})
		})
	}
}

func TestCachedSkipsExpiredIdentity(t *testing.T) {
	next := &fakeAttestor{fn: func(Request) (Identity, error) {
		// Accepted within leeway, but already past its expiry.
		return Identity{Namespace: "ns", ServiceAccount: "sa", Expiry: time.Now().Add(-time.Second)}, nil
	}}
	c := NewCached(next, CacheConfig{})
	for range 2 {
		if _, err := c.Attest(context.Background(), Request{Token: "tok"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := next.Calls(); got != 2 {
		t.Fatalf("next called %d times, want 2 (expired identity cached)", got)
	}
}

func TestCachedDoesNotCacheFailures(t *testing.T) {
	for _, sentinel := range []error{ErrUnauthenticated, ErrUnavailable} {
		t.Run(sentinel.Error(), func(t *testing.T) {
			fail := true
			next := &fakeAttestor{fn: func(Request) (Identity, error) {
				if fail {
					return Identity{}, fmt.Errorf("%w: nope", sentinel)
				}
				return Identity{Namespace: "ns", ServiceAccount: "sa"}, nil
			}}
			c := NewCached(next, CacheConfig{})
			ctx := context.Background()
			for i := range 2 {
				id, err := c.Attest(ctx, Request{Token: "tok"})
				if !errors.Is(err, sentinel) || id != (Identity{}) {
					t.Fatalf("call %d = %+v, %v; want %v", i, id, err, sentinel)
				}
			}
			fail = false
			if _, err := c.Attest(ctx, Request{Token: "tok"}); err != nil {
				t.Fatalf("after recovery: %v", err)
			}
			if got := next.Calls(); got != 3 {
				t.Fatalf("next called %d times, want 3 (a failure was cached)", got)
			}
		})
	}
}

func TestCachedEvictsLeastRecentlyUsed(t *testing.T) {
	next := &fakeAttestor{}
	c := NewCached(next, CacheConfig{Size: 2})
	ctx := context.Background()
	for _, tok := range []string{"a", "b", "a", "c", "a", "b"} {
		if _, err := c.Attest(ctx, Request{Token: tok}); err != nil {
			t.Fatal(err)
		}
	}
	// a, b, (a hit), c evicts b, (a hit), b evicts c.
	if got := next.Calls(); got != 4 {
		t.Fatalf("next called %d times, want 4", got)
	}
}

func TestCachedBypassesOversizedRequests(t *testing.T) {
	next := &fakeAttestor{}
	c := NewCached(next, CacheConfig{})
	big := Request{Token: string(make([]byte, MaxTokenSize+1))}
	for range 2 {
		if _, err := c.Attest(context.Background(), big); err != nil {
			t.Fatal(err)
		}
	}
	if got := next.Calls(); got != 2 {
		t.Fatalf("next called %d times, want 2", got)
	}
}

func TestCacheConfigValidate(t *testing.T) {
	for _, cfg := range []CacheConfig{{Size: -1}, {TTL: -time.Second}} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want error", cfg)
		}
	}
	if err := (&CacheConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
}

// TestCachedConcurrent is meant for -race: many goroutines share a small
// cache while the (bubble's) clock moves, and every answer must belong to
// its token.
func TestCachedConcurrent(t *testing.T) { synctest.Test(t, testCachedConcurrent) }

func testCachedConcurrent(t *testing.T) {
	next := &fakeAttestor{fn: func(req Request) (Identity, error) {
		if req.Token == "bad" {
			return Identity{}, ErrUnauthenticated
		}
		return Identity{Namespace: req.Token, ServiceAccount: "sa", Expiry: time.Now().Add(time.Minute)}, nil
	}}
	c := NewCached(next, CacheConfig{Size: 8, TTL: 30 * time.Second})

	const workers, iterations, tokens = 8, 500, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range iterations {
				tok := fmt.Sprintf("tok%d", (w+i)%tokens)
				if i%50 == 0 {
					time.Sleep(time.Second)
					tok = "bad"
				}
				id, err := c.Attest(context.Background(), Request{Token: tok})
				switch {
				case tok == "bad" && err == nil:
					errs <- errors.New("failure answered from cache")
					return
				case tok != "bad" && (err != nil || id.Namespace != tok):
					errs <- fmt.Errorf("token %s: got %+v, %v", tok, id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if calls := next.Calls(); calls >= workers*iterations {
		t.Errorf("next called %d times for %d requests: cache never hit", calls, workers*iterations)
	}
}

func BenchmarkCachedAttest(b *testing.B) {
	// The cache reads the real clock, so the token is minted now (the
	// attestor on testNow would make every call a miss).
	jwks, err := NewJWKS(JWKSConfig{Issuer: DevIssuer, Keys: StaticKeys{Set: trustedSigner().KeySet()}, Cluster: testCluster})
	if err != nil {
		b.Fatal(err)
	}
	a := NewCached(jwks, CacheConfig{})
	spec := validSpec()
	spec.Now = time.Now()
	req := Request{Token: mint(b, trustedSigner(), spec), ClusterID: testCluster}
	ctx := context.Background()
	if _, err := a.Attest(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &CacheConfig{}, &JWKSConfig{}, &RemoteKeysConfig{}, &MultiClusterConfig{}, &PolicyConfig{}, &TokenReviewConfig{}, &KubeClientConfig{})
}
