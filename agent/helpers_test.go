package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/meshca/meshca/agent/sdstest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/internal/unixsock"
	"github.com/meshca/meshca/trust"
)

// waitTimeout bounds every wait for an event on a real socket.
const waitTimeout = 10 * time.Second

var webID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")

// newSVID issues a certificate for id from tree, valid for ttl from now
// (backdated 30 s, as the issuer does).
func newSVID(t testing.TB, tree *testkit.Tree, id spiffeid.ID, ttl time.Duration) *SVID {
	t.Helper()
	return newSVIDAt(t, tree, id, time.Now(), ttl)
}

// newSVIDAt is newSVID issued at now.
func newSVIDAt(t testing.TB, tree *testkit.Tree, id spiffeid.ID, now time.Time, ttl time.Duration) *SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := tree.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{id.URL()}, TTL: ttl, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return &SVID{Chain: []*x509.Certificate{leaf, tree.Intermediate.Certificate}, Key: key, Roots: tree.Bundle.Roots()}
}

func mustSnapshot(t testing.TB, svid *SVID, b *trust.Bundle) *snapshot {
	t.Helper()
	s, err := newSnapshot(svid, b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// otherRoot returns a bundle of tree's root plus a second, unrelated root.
func otherRoot(t testing.TB, tree *testkit.Tree) (*trust.Bundle, *x509.Certificate) {
	t.Helper()
	other, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "other-root"), CommonName: "other root"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := trust.NewBundle(append(tree.Bundle.Roots(), other.Certificate)...)
	if err != nil {
		t.Fatal(err)
	}
	return b, other.Certificate
}

// logBuffer collects JSON log lines and lets a test wait for one.
type logBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced on every write
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written != nil {
		close(l.written)
		l.written = nil
	}
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until a log line contains every one of substrs, and returns
// that line. It fails the test after waitTimeout.
func (l *logBuffer) waitFor(t testing.TB, substrs ...string) string {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		l.mu.Lock()
		line := lineWithAll(l.b.String(), substrs...)
		if l.written == nil {
			l.written = make(chan struct{})
		}
		written := l.written
		l.mu.Unlock()
		if line != "" {
			return line
		}
		select {
		case <-written:
		case <-deadline:
			t.Fatalf("no log line with %q within %v; log:\n%s", substrs, waitTimeout, l.String())
		}
	}
}

func lineWithAll(logs string, substrs ...string) string {
	for line := range strings.Lines(logs) {
		found := true
		for _, s := range substrs {
			found = found && strings.Contains(line, s)
		}
		if found {
			return line
		}
	}
	return ""
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func discardLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// serveGRPC serves g on a new Unix socket in a temporary directory until
// the test ends, and returns the socket path.
func serveGRPC(t testing.TB, g *grpc.Server, shutdown func()) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	lis, err := unixsock.Listen(unixsock.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(lis) }()
	t.Cleanup(func() {
		shutdown()
		g.GracefulStop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// startSDS serves an SDS server over src and returns its socket path.
func startSDS(t testing.TB, src source, log *slog.Logger) string {
	t.Helper()
	sds, err := newSDSServer(sdsConfig{Source: src, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	sds.Register(g)
	return serveGRPC(t, g, sds.Shutdown)
}

// envoy connects an emulated Envoy with node id to the SDS socket.
func envoy(t testing.TB, path, id string) *sdstest.Envoy {
	t.Helper()
	e, err := sdstest.Dial(path, &corev3.Node{Id: id, Cluster: "web"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func subscribe(t testing.TB, e *sdstest.Envoy, name string) *sdstest.Subscription {
	t.Helper()
	s, err := e.Subscribe(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// next waits for the next response on s, checks and ACKs it.
func next(t testing.TB, s *sdstest.Subscription) *sdstest.Update {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	u, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("subscription %q: %v", s.Name, err)
	}
	return u
}

func serialOf(c *x509.Certificate) string { return trust.SerialHex(c.SerialNumber) }
