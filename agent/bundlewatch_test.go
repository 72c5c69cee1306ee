package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// fakeBundleSource hands out scripted streams: each WatchBundle call takes
// the next entry of streams (an open error, or a stream); past the end it
// fails with Unavailable.
type fakeBundleSource struct {
	mu      sync.Mutex
	streams []fakeOpen
	calls   []watchCall
}

type fakeOpen struct {
	err    error
	stream *fakeBundleStream
}

type watchCall struct {
	at    time.Time
	known uint64
}

var _ bundleSource = (*fakeBundleSource)(nil)

func (s *fakeBundleSource) WatchBundle(ctx context.Context, known uint64) (BundleStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, watchCall{time.Now(), known})
	if len(s.calls) > len(s.streams) {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	o := s.streams[len(s.calls)-1]
	if o.stream != nil {
		o.stream.ctx = ctx
	}
	return o.stream, o.err
}

func (s *fakeBundleSource) callLog() []watchCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]watchCall(nil), s.calls...)
}

// fakeBundleStream returns its responses, then, after lasts, its end
// error (blocking until the watch's context is done when end is nil).
type fakeBundleStream struct {
	ctx   context.Context
	resps []*meshcav1.Bundle
	lasts time.Duration
	end   error
}

func (s *fakeBundleStream) Recv() (*meshcav1.WatchBundleResponse, error) {
	if len(s.resps) > 0 {
		b := s.resps[0]
		s.resps = s.resps[1:]
		return &meshcav1.WatchBundleResponse{Bundle: b}, nil
	}
	if s.end != nil {
		select {
		case <-time.After(s.lasts):
			return nil, s.end
		case <-s.ctx.Done():
		}
	}
	<-s.ctx.Done()
	return nil, status.FromContextError(s.ctx.Err()).Err()
}

// fakeUpdater holds the bundles it was given and refuses older ones, as
// Manager does.
type fakeUpdater struct {
	mu  sync.Mutex
	got []*trust.TrustBundle
}

var _ trustUpdater = (*fakeUpdater)(nil)

func (u *fakeUpdater) TrustBundleSequence() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.got) == 0 {
		return 0
	}
	return u.got[len(u.got)-1].Sequence
}

func (u *fakeUpdater) SetTrustBundle(b *trust.TrustBundle) (bool, error) {
	held := u.TrustBundleSequence()
	if b.Sequence < held {
		return false, fmt.Errorf("%w: %d < %d", errStaleBundle, b.Sequence, held)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got = append(u.got, b)
	return true, nil
}

func (u *fakeUpdater) sequences() []uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []uint64
	for _, b := range u.got {
		out = append(out, b.Sequence)
	}
	return out
}

// runWatcher runs a watcher with jitter off inside a synctest bubble and
// returns a function that stops it and waits for Run to return nil.
func runWatcher(t *testing.T, src bundleSource, upd trustUpdater, logs *logBuffer) (stop func(), done <-chan error) {
	t.Helper()
	w, err := newBundleWatcher(bundleWatcherConfig{Source: src, Updater: upd, Issuer: "issuer:15012", Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	w.jitter = func(time.Duration) time.Duration { return 0 }
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}, errc
}

func ownBundle(seq uint64, roots ...*x509.Certificate) *meshcav1.Bundle {
	return trustBundle(seq, "cluster.local", roots, nil)
}

func TestBundleWatcherAppliesBundles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := testkit.New(t, testkit.Options{}).Root.Certificate
		malformed := &meshcav1.Bundle{Sequence: 7, TrustDomains: []*meshcav1.TrustDomainBundle{{TrustDomain: "cluster.local", X509Authorities: [][]byte{[]byte("junk")}}}}
		onlyFederated := &meshcav1.Bundle{Sequence: 8, TrustDomains: []*meshcav1.TrustDomainBundle{{TrustDomain: "other.example", X509Authorities: derOf(root), Federated: true}}}
		src := &fakeBundleSource{streams: []fakeOpen{{stream: &fakeBundleStream{
			resps: []*meshcav1.Bundle{ownBundle(5, root), malformed, onlyFederated, ownBundle(3, root), ownBundle(6, root), addCRLs(ownBundle(6, root), "cluster.local", trust.CRL{DER: []byte("crl")})},
		}}}}
		upd, logs := &fakeUpdater{}, &logBuffer{}
		stop, _ := runWatcher(t, src, upd, logs)
		synctest.Wait()
		if got := upd.sequences(); fmt.Sprint(got) != "[5 6 6]" {
			t.Errorf("applied sequences %v, want [5 6 6]: malformed and older bundles are skipped, one of the same sequence (new CRLs) is not", got)
		}
		for _, want := range [][]string{
			{"trust bundle rejected", `"reason":"malformed"`, `"sequence":7`, "authority 0", `"level":"WARN"`},
			{"trust bundle rejected", `"reason":"malformed"`, `"sequence":8`, "no trust domain of its own"},
			{"trust bundle rejected", `"reason":"stale"`, `"sequence":3`, `"issuer":"issuer:15012"`},
		} {
			if lineWithAll(logs.String(), want...) == "" {
				t.Errorf("no log line with %q; log:\n%s", want, logs.String())
			}
		}
		if calls := src.callLog(); len(calls) != 1 || calls[0].known != 0 {
			t.Errorf("watch calls %v, want one with known sequence 0", calls)
		}
		stop()
	})
}

func TestBundleWatcherStopsWhenUnimplemented(t *testing.T) {
	for _, tc := range []struct {
		name string
		open fakeOpen
	}{
		{"on open", fakeOpen{err: status.Error(codes.Unimplemented, "unknown service meshca.v1.BundleService")}},
		{"on first receive", fakeOpen{stream: &fakeBundleStream{end: status.Error(codes.Unimplemented, "unknown service meshca.v1.BundleService")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := &fakeBundleSource{streams: []fakeOpen{tc.open}}
				logs := &logBuffer{}
				_, done := runWatcher(t, src, &fakeUpdater{}, logs)
				synctest.Wait()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Run: %v", err)
					}
				default:
					t.Fatal("Run goes on against an issuer without BundleService")
				}
				if n := strings.Count(logs.String(), "does not publish trust bundles"); n != 1 {
					t.Errorf("logged %d times, want once; log:\n%s", n, logs.String())
				}
				if lineWithAll(logs.String(), "does not publish trust bundles", `"level":"INFO"`) == "" {
					t.Error("not logged at INFO")
				}
				if n := len(src.callLog()); n != 1 {
					t.Errorf("%d watch calls, want 1", n)
				}
			})
		})
	}
}

func TestBundleWatcherReconnectsWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := testkit.New(t, testkit.Options{}).Root.Certificate
		unavailable := fakeOpen{err: status.Error(codes.Unavailable, "connection refused")}
		src := &fakeBundleSource{streams: []fakeOpen{
			unavailable, unavailable, unavailable, unavailable, unavailable, unavailable, unavailable,
			// A stream that delivers a bundle, then breaks: the backoff
			// starts over, and the next watch names the sequence held.
			{stream: &fakeBundleStream{resps: []*meshcav1.Bundle{ownBundle(42, root)}, end: status.Error(codes.Unavailable, "EOF")}},
			unavailable,
		}}
		upd, logs := &fakeUpdater{}, &logBuffer{}
		start := time.Now()
		stop, _ := runWatcher(t, src, upd, logs)
		time.Sleep(3 * time.Minute)
		stop()
		calls := src.callLog()
		var gaps []time.Duration
		prev := start
		for _, c := range calls {
			gaps = append(gaps, c.at.Sub(prev))
			prev = c.at
		}
		want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second,
			time.Second, 2 * time.Second}
		if len(gaps) < len(want) || fmt.Sprint(gaps[:len(want)]) != fmt.Sprint(want) {
			t.Errorf("delays between watch calls %v, want %v...", gaps, want)
		}
		if len(calls) < 9 || calls[7].known != 0 || calls[8].known != 42 {
			t.Errorf("known sequences of the calls: %v, want 0 until the bundle 42 arrived, then 42", calls)
		}
		if lineWithAll(logs.String(), "trust bundle watch ended", "connection refused", `"level":"WARN"`) == "" {
			t.Error("failures to connect not logged as warnings")
		}
	})
}

func TestBundleWatcherReconnectsAtOnceAfterALongStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The issuer ends every connection after a maximum age; a watch
		// that held the current bundle all along receives nothing on it.
		aged := fakeOpen{stream: &fakeBundleStream{lasts: 30 * time.Minute, end: status.Error(codes.Unavailable, "error reading from server: EOF")}}
		src := &fakeBundleSource{streams: []fakeOpen{aged, aged, aged, aged}}
		logs := &logBuffer{}
		stop, _ := runWatcher(t, src, &fakeUpdater{}, logs)
		time.Sleep(2 * time.Hour)
		stop()
		calls := src.callLog()
		if len(calls) < 4 {
			t.Fatalf("%d watch calls in 2h, want at least 4", len(calls))
		}
		for i := 1; i < 4; i++ {
			if gap := calls[i].at.Sub(calls[i-1].at) - 30*time.Minute; gap != time.Second {
				t.Errorf("reconnection %d after %v, want %v: a stream that lasted is no failure", i, gap, time.Second)
			}
		}
		if line := lineWithAll(logs.String(), "trust bundle watch ended", "EOF", `"level":"WARN"`); line != "" {
			t.Errorf("the end of a long stream logged as a warning: %s", line)
		}
	})
}

func TestRetryDelay(t *testing.T) {
	full := func(d time.Duration) time.Duration { return d - 1 } // the most a jitter may take
	none := func(time.Duration) time.Duration { return 0 }
	for _, tc := range []struct {
		name     string
		failures int
		jitter   func(time.Duration) time.Duration
		want     time.Duration
	}{
		{"first", 0, none, time.Second},
		{"third", 2, none, 4 * time.Second},
		{"capped", 5, none, 30 * time.Second},
		{"many", 1000, none, 30 * time.Second},
		{"jitter takes at most half", 0, full, time.Second/2 + 1},
		{"jitter at the cap", 1000, full, 15*time.Second + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryDelay(tc.failures, time.Second, 30*time.Second, tc.jitter); got != tc.want {
				t.Errorf("retryDelay = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBundleWatcherConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bundleWatcherConfig
		want string
	}{
		{"no source", bundleWatcherConfig{Updater: &fakeUpdater{}}, "source is required"},
		{"no updater", bundleWatcherConfig{Source: &fakeBundleSource{}}, "updater is required"},
		{"inverted", bundleWatcherConfig{Source: &fakeBundleSource{}, Updater: &fakeUpdater{}, RetryMin: time.Minute, RetryMax: time.Second}, "not a range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newBundleWatcher(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := newBundleWatcher(bundleWatcherConfig{Source: &fakeBundleSource{}, Updater: &fakeUpdater{}}); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
