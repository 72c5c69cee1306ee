package issuer_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
)

// limitIssuer is an issuer on the real clock that knows goodToken (web)
// and watchToken (watcher), for the attacks on the server's limits.
func limitIssuer(t *testing.T, tree *testkit.Tree) *issuer.Issuer {
	t.Helper()
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{
			goodToken: {Namespace: "default", ServiceAccount: "web"}, watchToken: watcher,
		}},
		Recorder: &fakeRecorder{}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// dialIssuer connects to addr from the loopback address local (an own
// peer for the per-peer caps), with tok as bearer token unless empty and
// cert as TLS client certificate unless nil.
func dialIssuer(t *testing.T, addr, local string, tree *testkit.Tree, tok string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	tlsConfig := &tls.Config{RootCAs: tree.Bundle.Pool(), ServerName: "localhost"}
	if cert != nil {
		tlsConfig.Certificates = []tls.Certificate{*cert}
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			return d.DialContext(ctx, "tcp", addr)
		}),
	}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerCreds(tok)))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// openWatch opens a watch on conn and waits for its first answer: nil once
// a bundle arrives (the stream stays open until ctx ends), else the
// stream's error.
func openWatch(ctx context.Context, t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := meshcav1.NewBundleServiceClient(conn).WatchBundle(ctx, &meshcav1.WatchBundleRequest{})
	if err != nil {
		cancel()
		return err
	}
	timeout := time.AfterFunc(10*time.Second, cancel)
	defer timeout.Stop()
	if _, err := stream.Recv(); err != nil {
		cancel()
		return err
	}
	return nil
}

// svid issues an X509-SVID of iss's trust domain as a TLS client
// certificate.
func svid(t *testing.T, iss *issuer.Issuer) *tls.Certificate {
	t.Helper()
	key := testKey(t, "p256")
	chain, err := iss.Issue(t.Context(), issuer.Request{Token: goodToken, CSR: csrPEM(t, key, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{chain[0].Raw, chain[1].Raw}, PrivateKey: key}
}

func TestWatchBundleRequiresAWorkloadCredential(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	iss := limitIssuer(t, tree)
	addr := serveIssuerConfig(t, issuer.ServerConfig{Issuer: iss})
	// Another trust domain under the same root (a mesh root shared by
	// clusters): its SVIDs chain to our root but are not ours.
	other := limitIssuer(t, testkit.New(t, testkit.Options{TrustDomain: "other.example"}))
	// A tree under an unrelated root.
	stranger := limitIssuer(t, testkit.New(t, testkit.Options{RootKey: "stranger"}))

	for i, tc := range []struct {
		name string
		tok  string
		cert *tls.Certificate
		want codes.Code
	}{
		{"no credential", "", nil, codes.Unauthenticated},
		{"unknown token", "stolen-looking-token", nil, codes.Unauthenticated},
		{"SVID of another trust domain under the same root", "", svid(t, other), codes.Unauthenticated},
		{"SVID under another root", "", svid(t, stranger), codes.Unauthenticated},
		{"valid token", watchToken, nil, codes.OK},
		{"SVID of the trust domain", "", svid(t, iss), codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case is another caller, at an address of its own: the
			// refused ones spend their address's allowance of failed
			// attestations, which would hold up the next case's token.
			conn := dialIssuer(t, addr, fmt.Sprintf("127.0.0.%d", 10+i), tree, tc.tok, tc.cert)
			// The attack of many streams on few connections: every one
			// is refused, none is held.
			n := 1
			if tc.want != codes.OK {
				n = 50
			}
			for range n {
				err := openWatch(t.Context(), t, conn)
				if got := status.Code(err); got != tc.want {
					t.Fatalf("watch: %v, want %v", err, tc.want)
				}
				if tc.want == codes.Unauthenticated && status.Convert(err).Message() != "authentication failed" {
					t.Fatalf("refusal %q is not opaque", status.Convert(err).Message())
				}
			}
		})
	}
}

func TestWatchBundleCapsAndReleases(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	addr := serveIssuerConfig(t, issuer.ServerConfig{
		Issuer: limitIssuer(t, tree), Limits: grpclimit.Config{MaxWatches: 4, MaxWatchesPerPeer: 2},
	})
	peerA := dialIssuer(t, addr, "127.0.0.1", tree, watchToken, nil)
	peerB := dialIssuer(t, addr, "127.0.0.2", tree, watchToken, nil)
	peerC := dialIssuer(t, addr, "127.0.0.3", tree, watchToken, nil)
	for _, conn := range []*grpc.ClientConn{peerA, peerB, peerC} {
		if _, err := meshcav1.NewBundleServiceClient(conn).GetBundle(t.Context(), &meshcav1.GetBundleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// The connections are up: what streams add comes on top.
	baseline := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(t.Context())
	for _, conn := range []*grpc.ClientConn{peerA, peerA, peerB, peerB} {
		if err := openWatch(ctx, t, conn); err != nil {
			t.Fatalf("watch within the caps: %v", err)
		}
	}
	if err := openWatch(ctx, t, peerA); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third watch of one peer: %v, want ResourceExhausted", err)
	}
	if err := openWatch(ctx, t, peerC); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("fifth watch in all: %v, want ResourceExhausted", err)
	}
	if n := runtime.NumGoroutine(); n < baseline+4 {
		t.Fatalf("%d goroutines with 4 watches open, baseline %d: the count does not see streams", n, baseline)
	}

	// Streams that end give back their slots and their goroutines.
	cancel()
	// The slots come back as the server notices each cancellation: retry
	// until all four watches fit again (two per peer, four in all).
	stop := func() {}
	testkit.Eventually(t, 10*time.Second, "watch slots given back", func() error {
		more, cancelMore := context.WithCancel(t.Context())
		for _, conn := range []*grpc.ClientConn{peerC, peerA, peerA, peerC} {
			if err := openWatch(more, t, conn); err != nil {
				cancelMore()
				return fmt.Errorf("watch after the others ended: %w", err)
			}
		}
		stop = cancelMore
		return nil
	})
	stop()
	testkit.Eventually(t, 10*time.Second, "goroutines back to the baseline", func() error {
		if n := runtime.NumGoroutine(); n > baseline {
			return fmt.Errorf("%d goroutines, baseline %d: ended streams hold some", n, baseline)
		}
		return nil
	})
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	addr := serveIssuerConfig(t, issuer.ServerConfig{
		Issuer: limitIssuer(t, tree), Limits: grpclimit.Config{MaxConnectionIdle: 100 * time.Millisecond},
	})
	conn := dialIssuer(t, addr, "127.0.0.1", tree, "", nil)
	conn.Connect()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("never connected (state %v)", s)
		}
	}
	// A silent connection: no call at all. The server closes it.
	if !conn.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("an idle connection was kept open")
	}
}

func TestConnectionsPastTheCapAreRefused(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	addr := serveIssuerConfig(t, issuer.ServerConfig{
		Issuer: limitIssuer(t, tree), Limits: grpclimit.Config{MaxConnections: 3, MaxConnectionsPerPeer: 2},
	})
	handshake := func(local string) error {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: tree.Bundle.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	}
	for _, tc := range []struct {
		local string
		ok    bool
	}{
		{"127.0.0.1", true}, {"127.0.0.1", true},
		{"127.0.0.1", false}, // per-peer cap
		{"127.0.0.2", true},
		{"127.0.0.3", false}, // global cap
	} {
		if err := handshake(tc.local); (err == nil) != tc.ok {
			t.Fatalf("connection from %s: %v, want accepted=%v", tc.local, err, tc.ok)
		}
	}
}

func TestMaxConnectionAgeEndsWatches(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	addr := serveIssuerConfig(t, issuer.ServerConfig{
		Issuer: limitIssuer(t, tree),
		Limits: grpclimit.Config{MaxConnectionAge: 200 * time.Millisecond, MaxConnectionAgeGrace: 100 * time.Millisecond},
	})
	conn := dialIssuer(t, addr, "127.0.0.1", tree, watchToken, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := meshcav1.NewBundleServiceClient(conn).WatchBundle(ctx, &meshcav1.WatchBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("watch past the connection's age: %v, want Unavailable", err)
	}
	// The client reconnects on a fresh connection.
	if err := openWatch(ctx, t, conn); err != nil {
		t.Fatalf("watch after the connection aged out: %v", err)
	}
}

func TestValidityDurationSaturates(t *testing.T) {
	w := newWire(t)
	tok := w.token(t, attest.TokenSpec{})
	for _, tc := range []struct {
		name    string
		seconds int64
		want    time.Duration // 0: refused with InvalidArgument
	}{
		{"1<<62 seconds", 1 << 62, issuer.MaxTTL},
		{"max int64 seconds", math.MaxInt64, issuer.MaxTTL},
		{"just past the duration range", math.MaxInt64/int64(time.Second) + 1, issuer.MaxTTL},
		{"ten years", 10 * 365 * 24 * 3600, issuer.MaxTTL},
		{"zero is the default", 0, issuer.DefaultTTL},
		{"one second is the minimum", 1, issuer.MinTTL},
		{"two hours", 7200, 2 * time.Hour},
		{"negative", -1, 0},
		{"-1<<62 seconds", -1 << 62, 0},
		{"min int64 seconds", math.MinInt64, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := w.call(t, bearer(tok), csrPEM(t, testKey(t, "p256"), nil), tc.seconds)
			if tc.want == 0 {
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("CreateCertificate: %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf := parsePEMCert(t, resp.GetCertChain()[0])
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got < tc.want || got > tc.want+time.Minute {
				t.Fatalf("leaf lives %v, want %v (plus backdating)", got, tc.want)
			}
		})
	}
}
