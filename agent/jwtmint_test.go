package agent

import (
	"context"
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// newMintFixture is a running agent, holding its certificate, whose issuer
// mints JWT-SVIDs; it returns the fixture and a Workload API client.
func newMintFixture(t *testing.T) (*jwtFixture, workload.SpiffeWorkloadAPIClient) {
	t.Helper()
	f, k := startJWTFixture(t)
	waitJWTKeys(t, f.source(t), k.auth.KeyID)
	conn, err := grpc.NewClient(f.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return f, workload.NewSpiffeWorkloadAPIClient(conn)
}

// fetchConcurrently starts one FetchJWTSVID per audience set and returns
// their results as they come.
func fetchConcurrently(ctx context.Context, api workload.SpiffeWorkloadAPIClient, audiences []string) <-chan fetchResult {
	out := make(chan fetchResult, len(audiences))
	for _, a := range audiences {
		go func() {
			resp, err := api.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{a}})
			var token string
			if err == nil && len(resp.GetSvids()) == 1 {
				token = resp.GetSvids()[0].GetSvid()
			}
			out <- fetchResult{token, err}
		}()
	}
	return out
}

type fetchResult struct {
	token string
	err   error
}

func receive[T any](t *testing.T, ctx context.Context, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	var zero T
	return zero
}

// A local process asks for JWT-SVIDs of many distinct audiences at once
// while the issuer is slow: only maxConcurrentMints mints reach the
// issuer, each with the pod's token; the other calls fail at once with
// ResourceExhausted.
func TestJWTSVIDMintsBounded(t *testing.T) {
	f, api := newMintFixture(t)
	ctx := validateCtx(t)
	started, release := f.fi.holdMints()
	n := 4 * maxConcurrentMints
	audiences := make([]string, n)
	for i := range audiences {
		audiences[i] = fmt.Sprintf("aud-%d", i)
	}
	results := fetchConcurrently(ctx, api, audiences)
	// While the admitted mints are held none can succeed: every other call
	// must be refused.
	for range n - maxConcurrentMints {
		if r := receive(t, ctx, results); status.Code(r.err) != codes.ResourceExhausted {
			t.Fatalf("a call beyond the mint limit: %v, want ResourceExhausted", r.err)
		}
	}
	for range maxConcurrentMints {
		receive(t, ctx, started)
	}
	release()
	for range maxConcurrentMints {
		if r := receive(t, ctx, results); r.err != nil {
			t.Errorf("an admitted call: %v", r.err)
		}
	}
	if got := f.fi.mintCount(); got != maxConcurrentMints {
		t.Errorf("the issuer minted %d JWT-SVIDs for %d calls, want %d", got, n, maxConcurrentMints)
	}
	// The limit counts mints in flight, not those done.
	if r := receive(t, ctx, fetchConcurrently(ctx, api, []string{"after-the-flood"})); r.err != nil {
		t.Errorf("a call after the flood: %v", r.err)
	}
}

// Many concurrent calls for one audience set share one mint: none is
// refused although they outnumber maxConcurrentMints, and all get the same
// JWT-SVID.
func TestJWTSVIDMintsMerged(t *testing.T) {
	f, api := newMintFixture(t)
	ctx := validateCtx(t)
	started, release := f.fi.holdMints()
	n := 4 * maxConcurrentMints
	same := make([]string, n)
	for i := range same {
		same[i] = "shared"
	}
	results := fetchConcurrently(ctx, api, same)
	receive(t, ctx, started)
	release()
	var first string
	for range n {
		r := receive(t, ctx, results)
		switch {
		case r.err != nil:
			t.Fatalf("a call for the shared audience: %v", r.err)
		case first == "":
			first = r.token
		case r.token != first:
			t.Errorf("calls for one audience set got different JWT-SVIDs")
		}
	}
	// One mint; a caller that missed the cache just before the shared mint
	// stored its result, and asked just after it ended, starts another.
	if got := f.fi.mintCount(); got < 1 || got >= maxConcurrentMints {
		t.Errorf("the issuer minted %d JWT-SVIDs for %d calls of one audience set, want about 1", got, n)
	}
}
