package issuer_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// rotationRig is an issuer whose intermediate an Intermediates loop rotates.
// Its intermediates come from a real LocalRoot behind a flakySource; its
// bundles from a bundleFeed the test publishes to. It must be built inside
// a synctest bubble: the loop runs on fake time.
type rotationRig struct {
	// roots are two roots of trust domain east.example: root 0 signs
	// first; root 1 joins the bundle and takes over when a test says so.
	roots  [2]*ca.Authority
	client *flakySource
	feed   *bundleFeed
	iss    *issuer.Issuer
	loop   *issuer.Intermediates
	first  *ca.Authority
	logs   *testkit.LogBuffer
}

var east = spiffeid.RequireTrustDomainFromString("east.example")

func newRotationRig(t *testing.T, interTTL time.Duration) *rotationRig {
	t.Helper()
	g := &rotationRig{feed: &bundleFeed{}}
	now := time.Now()
	for i := range g.roots {
		root, err := ca.NewRoot(ca.RootConfig{Signer: newKey(t), CommonName: fmt.Sprintf("root %d", i), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		g.roots[i] = root
	}
	g.client = &flakySource{mint: g.localRoot(t, 0, east, interTTL)}
	a, tb, err := g.client.NewIntermediate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	g.first = a
	log, logs := captureLogs(t)
	g.logs = logs
	g.iss, err = issuer.New(issuer.Config{
		TrustDomain: east, Cluster: "east", Authority: a, Bundle: tb.OwnRoots(),
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}}},
		Recorder: &fakeRecorder{}, MinTTL: time.Second, DefaultTTL: 10 * time.Second, MaxTTL: time.Minute, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.loop, err = issuer.NewIntermediates(issuer.IntermediatesConfig{
		Issuer: g.iss, Root: rootClient{g.client, g.feed}, Bundle: tb, Jitter: func() float64 { return 0.5 },
		MinBackoff: time.Second, MaxBackoff: 8 * time.Second, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the loop stops before its logs are checked.
	t.Cleanup(func() { assertNoSecrets(t, g.logs.String()) })
	runInBackground(t, "Run", g.loop.Run)
	return g
}

// localRoot is a LocalRoot minting interTTL intermediates of cluster east
// in td under root i.
func (g *rotationRig) localRoot(t *testing.T, i int, td spiffeid.TrustDomain, interTTL time.Duration) *issuer.LocalRoot {
	t.Helper()
	local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: g.roots[i], TrustDomain: td, Cluster: "east", TTL: interTTL})
	if err != nil {
		t.Fatal(err)
	}
	return local
}

// publish publishes a bundle of both roots, naming root active active,
// under sequence seq.
func (g *rotationRig) publish(t *testing.T, seq uint64, active int) {
	t.Helper()
	roots, err := trust.NewBundle(g.roots[0].Certificate, g.roots[1].Certificate)
	if err != nil {
		t.Fatal(err)
	}
	g.feed.publish(&trust.TrustBundle{Sequence: seq, ActiveRoot: trust.Fingerprint(g.roots[active].Certificate),
		Domains: []trust.DomainBundle{{TrustDomain: east, Roots: roots}}})
}

// rootClient is the root as Intermediates sees it, put together from a
// source of intermediates and a source of bundles.
type rootClient struct {
	issuer.IntermediateSource
	feed *bundleFeed
}

func (c rootClient) WatchBundle(ctx context.Context, fn func(*trust.TrustBundle)) error {
	return c.feed.WatchBundle(ctx, fn)
}

// flakySource asks mint for each intermediate and records when it was
// asked; down makes it fail as an unreachable root does, reject as a root
// that refuses the credential.
type flakySource struct {
	mu     sync.Mutex
	mint   issuer.IntermediateSource
	down   bool
	reject bool
	calls  []time.Time
}

var _ issuer.IntermediateSource = (*flakySource)(nil)

func (f *flakySource) NewIntermediate(ctx context.Context) (*ca.Authority, *trust.TrustBundle, error) {
	f.mu.Lock()
	f.calls = append(f.calls, time.Now())
	mint, down, reject := f.mint, f.down, f.reject
	f.mu.Unlock()
	switch {
	case down:
		return nil, nil, status.Error(codes.Unavailable, "connection refused")
	case reject:
		return nil, nil, fmt.Errorf("renew: %w: credential rejected", issuer.ErrRejected)
	}
	return mint.NewIntermediate(ctx)
}

func (f *flakySource) set(change func(f *flakySource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *flakySource) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// bundleFeed is a root's bundle stream: WatchBundle passes on every bundle
// published to it that is newer than the last one it passed on.
type bundleFeed struct {
	v watch.Value[*trust.TrustBundle]
}

func (b *bundleFeed) publish(tb *trust.TrustBundle) { b.v.Store(tb) }

func (b *bundleFeed) WatchBundle(ctx context.Context, fn func(*trust.TrustBundle)) error {
	var held uint64
	for {
		tb, changed := b.v.Load()
		if tb != nil && tb.Sequence > held {
			held = tb.Sequence
			fn(tb)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// issue issues a workload certificate and returns its chain, leaf first.
func (g *rotationRig) issue(t *testing.T) []*x509.Certificate {
	t.Helper()
	chain, err := g.iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatalf("issue at %v: %v", time.Now(), err)
	}
	return chain
}

// bundle returns the bundle the loop publishes.
func (g *rotationRig) bundle() *trust.TrustBundle {
	tb, _ := g.loop.Current()
	return tb
}

func sleepUntil(at time.Time) {
	time.Sleep(time.Until(at))
	synctest.Wait()
}

// phases returns when less than 1/2 and 1/6 of c's life remain.
func phases(c *x509.Certificate) (prepare, activate time.Time) {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotAfter.Add(-life / 2), c.NotAfter.Add(-life / 6)
}

func TestIntermediatesPrepareAtHalfActivateAtSixth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRotationRig(t, 60*time.Second)
		prepare, activate := phases(g.first.Certificate)

		sleepUntil(prepare.Add(-time.Millisecond))
		if n := len(g.client.callTimes()); n != 1 {
			t.Fatalf("%d calls to the root before half-life, want only the first", n)
		}
		before := g.issue(t)
		sleepUntil(prepare.Add(time.Millisecond))
		calls := g.client.callTimes()
		if len(calls) != 2 || !calls[1].Equal(prepare) {
			t.Fatalf("calls to the root at %v, want the second at %v", calls, prepare)
		}
		if g.iss.Authority() != g.first {
			t.Fatal("the prepared intermediate was activated at once")
		}

		sleepUntil(activate.Add(-time.Millisecond))
		if g.iss.Authority() != g.first {
			t.Fatal("switched before 1/6 of the life remained")
		}
		sleepUntil(activate.Add(time.Millisecond))
		next := g.iss.Authority()
		if next == g.first {
			t.Fatal("not switched when 1/6 of the life remained")
		}
		if nb := next.Certificate.NotBefore; nb.After(prepare) || nb.Before(prepare.Add(-time.Minute)) {
			t.Errorf("active intermediate issued at %v, want the one prepared at %v", nb, prepare)
		}
		after := g.issue(t)
		if !before[1].Equal(g.first.Certificate) || !after[1].Equal(next.Certificate) {
			t.Error("issued chains do not carry the intermediate active at the time")
		}
		for _, chain := range [][]*x509.Certificate{before, after} {
			verifyChain(t, chain, g.bundle())
		}
		if !strings.Contains(g.logs.String(), "next intermediate prepared") || !strings.Contains(g.logs.String(), "intermediate activated") {
			t.Error("steps not logged")
		}

		// Steady state: the issuer never lacks a valid intermediate.
		for end := time.Now().Add(10 * time.Minute); time.Now().Before(end); time.Sleep(5 * time.Second) {
			synctest.Wait()
			g.issue(t)
		}
		calls = g.client.callTimes()
		if n := len(calls); n < 20 || n > 35 {
			t.Errorf("%d calls to the root in 10 minutes of 60 s intermediates", n)
		}
		if d := slices.Min(intervals(calls)); d < 15*time.Second {
			t.Errorf("calls to the root only %v apart", d)
		}
	})
}

func TestIntermediatesFollowActiveRoot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRotationRig(t, time.Hour)
		seq := g.bundle().Sequence

		g.publish(t, seq+1, 0) // a new root joins the bundle but does not sign yet
		synctest.Wait()
		if n := len(g.client.callTimes()); n != 1 {
			t.Errorf("%d calls to the root after a root joined, want none besides the first", n)
		}
		if got := g.bundle().Sequence; got != seq+1 {
			t.Errorf("published bundle %d, want %d", got, seq+1)
		}
		if n := len(g.iss.Bundle().Roots()); n != 2 {
			t.Errorf("issuer verifies against %d roots, want 2", n)
		}
		if g.iss.Authority() != g.first {
			t.Error("intermediate changed when a root joined")
		}

		// The root signs under root 1 and says so in its bundle; what it
		// returns with each intermediate is root 1's own bundle, older.
		g.client.set(func(f *flakySource) { f.mint = g.localRoot(t, 1, east, time.Hour) })
		g.publish(t, seq+2, 1)
		synctest.Wait()
		if n := len(g.client.callTimes()); n != 2 {
			t.Fatalf("%d calls to the root after the active root changed, want one renewal at once", n)
		}
		chain := g.issue(t)
		if root1 := g.roots[1].Certificate; !chain[2].Equal(root1) || chain[1].CheckSignatureFrom(root1) != nil {
			t.Errorf("issued chain ends at %q, want the new root", chain[2].Subject.CommonName)
		}
		verifyChain(t, chain, g.bundle())
		if g.bundle().Sequence != seq+2 {
			t.Errorf("published bundle %d, want %d", g.bundle().Sequence, seq+2)
		}
	})
}

func TestIntermediatesKeepIssuingWhileRootDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRotationRig(t, 60*time.Second)
		prepare, activate := phases(g.first.Certificate)
		g.client.set(func(f *flakySource) { f.down = true })

		sleepUntil(activate.Add(5 * time.Second))
		calls := g.client.callTimes()[1:]
		if len(calls) == 0 || !calls[0].Equal(prepare) {
			t.Fatalf("first renewal attempt at %v, want %v", calls, prepare)
		}
		want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
		if got := intervals(calls); !slices.Equal(got, want) {
			t.Errorf("retry intervals %v, want %v", got, want)
		}
		if chain := g.issue(t); !chain[1].Equal(g.first.Certificate) {
			t.Error("not issuing with the current intermediate while the root is down")
		}
		logs := g.logs.String()
		if !strings.Contains(logs, `"level":"WARN","msg":"intermediate renewal failed; still issuing`) ||
			!strings.Contains(logs, `"level":"ERROR","msg":"intermediate renewal failed; still issuing`) {
			t.Error("failures not logged as warnings, then as errors past 1/6 of the life")
		}

		g.client.set(func(f *flakySource) { f.down = false })
		sleepUntil(time.Now().Add(8 * time.Second))
		if g.iss.Authority() == g.first {
			t.Fatal("not switched once the root was back, past the 1/6 point")
		}
		verifyChain(t, g.issue(t), g.bundle())
	})
}

func TestIntermediatesNeverActivateUnverifiable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRotationRig(t, 60*time.Second)
		_, activate := phases(g.first.Certificate)
		first := g.client.mint
		g.client.set(func(f *flakySource) {
			f.mint = g.localRoot(t, 0, spiffeid.RequireTrustDomainFromString("elsewhere.example"), time.Minute)
		})
		sleepUntil(activate.Add(10 * time.Second))
		if g.iss.Authority() != g.first {
			t.Fatal("activated an intermediate for another trust domain")
		}
		if !strings.Contains(g.logs.String(), "the prepared intermediate does not verify; discarded") {
			t.Error("discarding not logged")
		}
		g.issue(t)
		g.client.set(func(f *flakySource) { f.mint = first })
		sleepUntil(time.Now().Add(8 * time.Second))
		if g.iss.Authority() == g.first {
			t.Fatal("not switched once the root signed correctly")
		}
	})
}

func TestIntermediatesRejectedRetriesSlowly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRotationRig(t, time.Hour)
		prepare, _ := phases(g.first.Certificate)
		g.client.set(func(f *flakySource) { f.reject = true })
		sleepUntil(prepare.Add(6 * time.Minute))
		calls := g.client.callTimes()[1:]
		if want := []time.Time{prepare, prepare.Add(5 * time.Minute)}; len(calls) != 2 || !calls[0].Equal(want[0]) || !calls[1].Equal(want[1]) {
			t.Errorf("attempts at %v, want %v", calls, want)
		}
		if !strings.Contains(g.logs.String(), `"level":"ERROR","msg":"intermediate renewal failed`) {
			t.Error("a rejection is not logged as an error")
		}
	})
}

func intervals(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]))
	}
	return out
}
