package issuer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
)

// countingAttestor counts the tokens that reach the attestor.
type countingAttestor struct {
	issuer.Attestor
	calls atomic.Int64
}

func (c *countingAttestor) Attest(ctx context.Context, req attest.Request) (attest.Identity, error) {
	c.calls.Add(1)
	return c.Attestor.Attest(ctx, req)
}

// TestJunkTokensStopReachingTheAttestor sends CreateCertificate calls with
// junk bearer tokens as fast as one caller can: after its allowance of
// failures, the issuer refuses the caller's requests (Unauthenticated, as
// before) without handing their tokens to the attestor, whose every call
// would be a TokenReview; as the allowance refills, a valid token passes.
func TestJunkTokensStopReachingTheAttestor(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	counter := &countingAttestor{}
	w := newWireOptions(t, wireOptions{now: clock, wrap: func(a issuer.Attestor, r issuer.Recorder) (issuer.Attestor, issuer.Recorder) {
		counter.Attestor = a
		return counter, r
	}})
	csr := csrPEM(t, testKey(t, "p256"), nil)
	const junk = 100
	for i := range junk {
		_, err := w.call(t, bearer("junk-token"), csr, 0)
		wantRefused(t, err, codes.Unauthenticated, "authentication failed")
		if t.Failed() {
			t.Fatalf("junk call %d", i)
		}
	}
	reached := counter.calls.Load()
	if reached >= junk || reached < 10 {
		t.Fatalf("%d of %d junk tokens reached the attestor, want the allowance only", reached, junk)
	}
	limited := testkit.Value(testkit.Series(t, w.reg, issuer.AttestationFailuresMetric, "reason", issuer.AttestRateLimited))
	if int64(limited) != junk-reached {
		t.Errorf("%v requests counted as %s, want %d", limited, issuer.AttestRateLimited, junk-reached)
	}
	t.Logf("%d of %d junk tokens reached the attestor", reached, junk)

	// A valid token from the same address waits for the allowance too,
	// and passes once a second has refilled it.
	good := bearer(w.token(t, attest.TokenSpec{}))
	_, err := w.call(t, good, csr, 0)
	wantRefused(t, err, codes.Unauthenticated, "authentication failed")
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if _, err := w.call(t, good, csr, 0); err != nil {
		t.Fatalf("a valid token once the allowance refilled: %v", err)
	}
	if got := counter.calls.Load(); got != reached+1 {
		t.Errorf("%d tokens reached the attestor, want %d", got, reached+1)
	}
}
