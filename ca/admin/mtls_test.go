package admin_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/admin"
	"github.com/meshca/meshca/ca/catest"
)

// actorEcho answers ListRevocations with the caller's actor.
type actorEcho struct {
	meshcav1.UnimplementedAdminServiceServer
	calls atomic.Int32
}

func (a *actorEcho) ListRevocations(ctx context.Context, _ *meshcav1.ListRevocationsRequest) (*meshcav1.ListRevocationsResponse, error) {
	a.calls.Add(1)
	return &meshcav1.ListRevocationsResponse{Revocations: []*meshcav1.Revocation{{RevokedBy: admin.Actor(ctx)}}}, nil
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// leafCert signs a leaf with inter for a SPIFFE ID (when id is set) or a
// DNS name, valid for ttl from now, as a TLS certificate with its chain.
func leafCert(t *testing.T, inter *ca.Authority, keyName, id, dns string, now time.Time, ttl time.Duration) tls.Certificate {
	t.Helper()
	key := catest.Key(t, keyName)
	req := ca.LeafRequest{PublicKey: key.Public(), TTL: ttl, Now: now}
	if id != "" {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		req.URIs = []*url.URL{u}
	}
	if dns != "" {
		req.DNSNames = []string{dns}
	}
	leaf, err := inter.SignLeaf(req)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, inter.Certificate.Raw}, PrivateKey: key, Leaf: leaf}
}

const aliceID = "spiffe://admin.example/admin/alice"

type mtlsHarness struct {
	tree   *catest.Tree
	clock  *testClock
	m      *admin.MTLS
	echo   *actorEcho
	addr   string
	server tls.Certificate
}

func newMTLSHarness(t *testing.T) *mtlsHarness {
	t.Helper()
	start := time.Now().Truncate(time.Second)
	h := &mtlsHarness{
		tree:  catest.New(t, catest.Options{TrustDomain: "admin.example", Now: start.Add(-time.Hour)}),
		clock: &testClock{t: start},
		echo:  &actorEcho{},
	}
	h.server = leafCert(t, h.tree.Intermediate, "admin-server", "", "admin.test", start.Add(-time.Minute), 24*time.Hour)
	var err error
	h.m, err = admin.NewMTLS(admin.MTLSConfig{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &h.server, nil },
		Roots:          func() *ca.Bundle { return h.tree.Bundle },
		Admins:         []spiffeid.ID{spiffeid.RequireFromString("spiffe://admin.example/admin/bob"), spiffeid.RequireFromString(aliceID)},
		Now:            h.clock.Now,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	srv := grpc.NewServer(h.m.ServerOptions()...)
	meshcav1.RegisterAdminServiceServer(srv, h.echo)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return h
}

// clientTLS trusts the harness's roots for the server "admin.test" and
// presents certs.
func (h *mtlsHarness) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: h.tree.Bundle.Pool(), ServerName: "admin.test", Certificates: certs, MinVersion: tls.VersionTLS12}
}

func (h *mtlsHarness) dial(t *testing.T, certs ...tls.Certificate) meshcav1.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(h.clientTLS(certs...))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshcav1.NewAdminServiceClient(conn)
}

func TestMTLSAdmin(t *testing.T) {
	h := newMTLSHarness(t)
	now := h.clock.Now()
	alice := leafCert(t, h.tree.Intermediate, "admin-alice", aliceID, "", now.Add(-time.Minute), time.Hour)

	client := h.dial(t, alice)
	resp, err := client.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
	if err != nil {
		t.Fatalf("an admin's call: %v", err)
	}
	if got := resp.GetRevocations()[0].GetRevokedBy(); got != "spiffe:"+aliceID {
		t.Fatalf("actor %q, want %q", got, "spiffe:"+aliceID)
	}

	other := catest.New(t, catest.Options{TrustDomain: "admin.example", RootKey: "other-root", Now: now.Add(-time.Hour)})
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"not an admin", []tls.Certificate{leafCert(t, h.tree.Intermediate, "admin-web", "spiffe://admin.example/ns/default/sa/web", "", now, time.Hour)}},
		{"admin ID from another root", []tls.Certificate{leafCert(t, other.Intermediate, "admin-alice", aliceID, "", now, time.Hour)}},
		{"no SPIFFE ID", []tls.Certificate{leafCert(t, h.tree.Intermediate, "admin-dns", "", "alice.admin.example", now, time.Hour)}},
		{"no client certificate", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.echo.calls.Load()
			_, err := h.dial(t, tc.certs...).ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
			wantCode(t, err, codes.Unavailable) // the handshake failed
			if h.echo.calls.Load() != before {
				t.Fatal("a refused client reached the service")
			}
			conn, err := tls.Dial("tcp", h.addr, h.clientTLS(tc.certs...))
			if err == nil {
				// TLS 1.3: the server checks the client's certificate after the
				// client has finished; its alert comes with the first read.
				defer conn.Close()
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err = conn.Read(make([]byte, 1))
			}
			if err == nil || err == io.EOF {
				t.Fatalf("TLS with the server: %v, want a handshake alert", err)
			}
		})
	}

	// The connection stays open past the SVID's expiry: the interceptor
	// refuses the next call on it.
	h.clock.Advance(2 * time.Hour)
	before := h.echo.calls.Load()
	_, err = client.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
	wantCode(t, err, codes.PermissionDenied)
	if h.echo.calls.Load() != before {
		t.Fatal("a call with an expired SVID reached the service")
	}
}

func TestMTLSInterceptorRefusesOtherPeers(t *testing.T) {
	h := newMTLSHarness(t)
	called := false
	handler := func(context.Context, any) (any, error) { called = true; return nil, nil }
	info := &grpc.UnaryServerInfo{FullMethod: "/meshca.v1.AdminService/ListRevocations"}
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		wantActor string
	}{
		{"no peer", context.Background(), "admin:unknown"},
		{"plain TLS", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}}), "admin:unknown"},
		{"Unix socket", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: admin.PeerCredInfo("admin:root")}), "admin:root"},
		{"no auth info", peer.NewContext(context.Background(), &peer.Peer{}), "admin:unknown"},
	} {
		_, err := h.m.UnaryInterceptor()(tc.ctx, nil, info, handler)
		wantCode(t, err, codes.PermissionDenied)
		if called {
			t.Fatalf("%s: the interceptor let the call through", tc.name)
		}
		if got := admin.Actor(tc.ctx); got != tc.wantActor {
			t.Fatalf("%s: actor %q, want %q", tc.name, got, tc.wantActor)
		}
	}
}

func TestMTLSRootsFollowRotation(t *testing.T) {
	h := newMTLSHarness(t)
	alice := leafCert(t, h.tree.Intermediate, "admin-alice", aliceID, "", h.clock.Now().Add(-time.Minute), time.Hour)
	var roots atomic.Pointer[ca.Bundle]
	roots.Store(h.tree.Bundle)
	m, err := admin.NewMTLS(admin.MTLSConfig{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &h.server, nil },
		Roots:          roots.Load,
		Admins:         []spiffeid.ID{spiffeid.RequireFromString(aliceID)},
		Now:            h.clock.Now,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srvConf := m.TLSConfig()
	handshake := func() error {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		errc := make(chan error, 1)
		go func() { errc <- tls.Server(s, srvConf).HandshakeContext(t.Context()) }()
		cli := tls.Client(c, h.clientTLS(alice))
		if err := cli.HandshakeContext(t.Context()); err != nil {
			return err
		}
		// Drain what the server sends after the client has finished (its
		// tickets, or its alert): a pipe has no buffer.
		go io.Copy(io.Discard, cli)
		return <-errc
	}
	if err := handshake(); err != nil {
		t.Fatalf("handshake with alice's SVID: %v", err)
	}
	other := catest.New(t, catest.Options{TrustDomain: "admin.example", RootKey: "other-root"})
	roots.Store(other.Bundle)
	if err := handshake(); err == nil {
		t.Fatal("alice's SVID still accepted after its root left the trusted set")
	}
	roots.Store(nil)
	if err := handshake(); err == nil {
		t.Fatal("accepted with no trusted roots")
	}
}

func TestMTLSConfigValidate(t *testing.T) {
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }
	roots := func() *ca.Bundle { return nil }
	admins := []spiffeid.ID{spiffeid.RequireFromString(aliceID)}
	for name, cfg := range map[string]admin.MTLSConfig{
		"no certificate": {Roots: roots, Admins: admins},
		"no roots":       {GetCertificate: getCert, Admins: admins},
		"no admins":      {GetCertificate: getCert, Roots: roots},
		"zero admin":     {GetCertificate: getCert, Roots: roots, Admins: []spiffeid.ID{{}}},
	} {
		if _, err := admin.NewMTLS(cfg); err == nil {
			t.Errorf("%s: NewMTLS accepted it", name)
		}
	}
	if _, err := admin.NewMTLS(admin.MTLSConfig{GetCertificate: getCert, Roots: roots, Admins: admins}); err != nil {
		t.Fatal(err)
	}
}
