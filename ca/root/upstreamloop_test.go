package root

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/rotation"
)

// fakeUpstream is an upstream PKI in memory: a self-signed root that
// issues CA certificates for ttl, failing as unreachable while down.
type fakeUpstream struct {
	root *x509.Certificate
	key  crypto.Signer
	ttl  time.Duration

	mu   sync.Mutex
	down bool
	// refuse makes Issue answer with a refusal instead.
	refuse bool
	calls  []time.Time
}

var _ Upstream = (*fakeUpstream)(nil)

func newFakeUpstream(t testing.TB, ttl time.Duration) *fakeUpstream {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake upstream root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(100 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeUpstream{root: mustParse(t, der), key: key, ttl: ttl}
}

func (f *fakeUpstream) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeUpstream) Issue(_ context.Context, req upstream.Request) (*upstream.Issued, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	if f.down {
		return nil, fmt.Errorf("fake upstream: %w: connection refused", grpcx.ErrUnavailable)
	}
	if f.refuse {
		return nil, fmt.Errorf("fake upstream: %w: lifetime over the provisioner's maximum", upstream.ErrRefused)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(len(f.calls) + 1)), Subject: pkix.Name{CommonName: "meshca CA"},
		NotBefore: now, NotAfter: now.Add(f.ttl), IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.root, req.Signer.Public(), f.key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &upstream.Issued{Certificate: c, Root: f.root}, nil
}

func (f *fakeUpstream) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

// TestUpstreamRenewalLoop runs Root.Run on synctest's clock under an
// upstream that is down when the renewal falls due: the active CA keeps
// signing, the attempts are spaced by a growing backoff (from Tick,
// doubling, jittered by at most a fifth) instead of one per tick, and
// once the upstream is back the next attempt succeeds and the new CA goes
// through prepared to active.
func TestUpstreamRenewalLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const tick = time.Minute
		up := newFakeUpstream(t, 30*time.Hour)
		db := openSQLite(t, time.Now)
		r, err := New(t.Context(), Config{
			Store: db, Keys: FileKeys{Dir: t.TempDir()}, Hosts: []string{"localhost"}, TrustDomains: []string{"east.example"},
			Upstream: up, Tick: tick, PropagationDelay: 10 * time.Minute,
			Logger: slog.New(slog.NewTextHandler(&testkit.LogBuffer{}, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		first := r.state.Load().active.Certificate
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		// Due at a third of the 30 h left: down from just before then.
		time.Sleep(19*time.Hour + 50*time.Minute)
		up.setDown(true)
		time.Sleep(2*time.Hour + 10*time.Minute)
		synctest.Wait()
		calls := up.callTimes()[1:] // the first CA's
		if len(calls) < 4 || len(calls) > 8 {
			t.Fatalf("%d requests in 2 h with the upstream down, want a handful (backoff from %v up to an hour), not one per tick", len(calls), tick)
		}
		for i := 1; i < len(calls); i++ {
			gap, want := calls[i].Sub(calls[i-1]), min(tick<<(i-1), rotation.MaxCABackoff)
			if gap < want*4/5 || gap > want*6/5+tick {
				t.Fatalf("attempt %d came %v after the previous one, want about %v", i+1, gap, want)
			}
		}
		if a := r.state.Load().active; a == nil || !a.Certificate.Equal(first) || len(r.Roots()) != 1 {
			t.Fatal("the active CA changed or a root was added while the upstream was down")
		}

		up.setDown(false)
		time.Sleep(rotation.MaxCABackoff + tick)
		synctest.Wait()
		roots := r.Roots()
		if len(roots) != 2 || roots[1].State != RootPrepared && roots[1].State != RootActive || !roots[1].Anchor.Equal(up.root) {
			t.Fatalf("after the upstream came back: %d roots, want the renewed CA under the upstream", len(roots))
		}
		time.Sleep(15 * time.Minute)
		synctest.Wait()
		if a := r.state.Load().active; a == nil || !a.Certificate.Equal(roots[1].Cert) {
			t.Fatal("the renewed CA did not become active after the propagation delay")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestUpstreamRefusalNeedsTheOperator: a refusal is logged as an error for
// the operator and retried after about an hour, not at the next tick.
func TestUpstreamRefusalNeedsTheOperator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := newFakeUpstream(t, 30*time.Hour)
		logs := &testkit.LogBuffer{}
		r, err := New(t.Context(), Config{
			Store: openSQLite(t, time.Now), Keys: FileKeys{Dir: t.TempDir()}, Hosts: []string{"localhost"},
			TrustDomains: []string{"east.example"}, Upstream: up, Tick: time.Minute,
			Logger: slog.New(slog.NewTextHandler(logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		up.mu.Lock()
		up.refuse = true
		up.mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		time.Sleep(22 * time.Hour)
		synctest.Wait()
		calls := up.callTimes()[1:]
		if len(calls) < 2 || len(calls) > 3 {
			t.Fatalf("%d requests in 2 h after a refusal, want 2 or 3 (about an hour apart)", len(calls))
		}
		if gap := calls[1].Sub(calls[0]); gap < 48*time.Minute || gap > 73*time.Minute {
			t.Fatalf("retry %v after a refusal, want about an hour", gap)
		}
		if n := strings.Count(logs.String(), "level=ERROR msg=\"the upstream PKI refused meshca's next CA certificate: the operator must change"); n != len(calls) {
			t.Fatalf("%d refusals logged as errors for the operator, want %d:\n%s", n, len(calls), logs.String())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
