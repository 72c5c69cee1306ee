package adminapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
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
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// actorEcho answers ListRevocations with the caller's actor.
type actorEcho struct {
	meshcav1.UnimplementedAdminServiceServer
	calls atomic.Int32
}

func (a *actorEcho) ListRevocations(ctx context.Context, _ *meshcav1.ListRevocationsRequest) (*meshcav1.ListRevocationsResponse, error) {
	a.calls.Add(1)
	return &meshcav1.ListRevocationsResponse{Revocations: []*meshcav1.Revocation{{RevokedBy: adminapi.Actor(ctx)}}}, nil
}

// leafCert signs a leaf with inter for a SPIFFE ID (when id is set) or a
// DNS name, valid for ttl from now, as a TLS certificate with its chain.
func leafCert(t *testing.T, inter *ca.Authority, keyName, id, dns string, now time.Time, ttl time.Duration) tls.Certificate {
	t.Helper()
	key := testkit.Key(t, keyName)
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

// adminCert signs an admin certificate with the root authority: a
// client-only X509-SVID for id, valid for ttl from now.
func adminCert(t *testing.T, root *ca.Authority, keyName, id string, now time.Time, ttl time.Duration) tls.Certificate {
	t.Helper()
	key := testkit.Key(t, keyName)
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), URIs: []*url.URL{u}, TTL: ttl, Now: now,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// fakeDenyList is an adminapi.RevocationChecker whose revoked serials and
// SPIFFE IDs, and failure, the test sets.
type fakeDenyList struct {
	mu      sync.Mutex
	serials map[string]bool
	ids     map[string]bool
	err     error
}

var _ adminapi.RevocationChecker = (*fakeDenyList)(nil)

func (f *fakeDenyList) CheckRevoked(serial string, id spiffeid.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.err != nil:
		return f.err
	case f.serials[serial]:
		return errors.New("serial revoked")
	case f.ids[id.String()]:
		return errors.New("SPIFFE ID revoked")
	}
	return nil
}

func (f *fakeDenyList) set(serial, id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serials, f.ids, f.err = map[string]bool{serial: serial != ""}, map[string]bool{id: id != ""}, err
}

const aliceID = "spiffe://admin.example/admin/alice"

type mtlsHarness struct {
	tree   *testkit.Tree
	clock  *testkit.Clock
	deny   *fakeDenyList
	crls   atomic.Pointer[[]trust.CRL]
	m      *adminapi.MTLS
	echo   *actorEcho
	addr   string
	server tls.Certificate
}

func newMTLSHarness(t *testing.T) *mtlsHarness {
	t.Helper()
	start := time.Now().Truncate(time.Second)
	h := &mtlsHarness{
		tree:  testkit.New(t, testkit.Options{TrustDomain: "admin.example", Now: start.Add(-time.Hour)}),
		clock: testkit.NewClock(start),
		echo:  &actorEcho{},
		deny:  &fakeDenyList{},
	}
	h.crls.Store(&[]trust.CRL{})
	h.server = leafCert(t, h.tree.Intermediate, "admin-server", "", "admin.test", start.Add(-time.Minute), 24*time.Hour)
	var err error
	h.m, err = adminapi.NewMTLS(adminapi.MTLSConfig{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &h.server, nil },
		Roots:          func() *trust.Bundle { return h.tree.Bundle },
		Admins:         []spiffeid.ID{spiffeid.RequireFromString("spiffe://admin.example/admin/bob"), spiffeid.RequireFromString(aliceID)},
		Revocations:    h.deny,
		CRLs:           func() []trust.CRL { return *h.crls.Load() },
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
	go srv.Serve(h.m.Listener(lis))
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
	alice := adminCert(t, h.tree.Root, "admin-alice", aliceID, now.Add(-time.Minute), time.Hour)

	client := h.dial(t, alice)
	resp, err := client.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
	if err != nil {
		t.Fatalf("an admin's call: %v", err)
	}
	if got := resp.GetRevocations()[0].GetRevokedBy(); got != "spiffe:"+aliceID {
		t.Fatalf("actor %q, want %q", got, "spiffe:"+aliceID)
	}

	other := testkit.New(t, testkit.Options{TrustDomain: "admin.example", RootKey: "other-root", Now: now.Add(-time.Hour)})
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"not an admin", []tls.Certificate{leafCert(t, h.tree.Intermediate, "admin-web", "spiffe://admin.example/ns/default/sa/web", "", now, time.Hour)}},
		{"admin ID from another root", []tls.Certificate{adminCert(t, other.Root, "admin-alice", aliceID, now, time.Hour)}},
		// What any issuer of the trust domain can mint: the admin's SPIFFE
		// ID under a cluster intermediate.
		{"admin ID through an intermediate", []tls.Certificate{leafCert(t, h.tree.Intermediate, "admin-alice", aliceID, "", now, time.Hour)}},
		{"admin ID without client authentication", []tls.Certificate{serverOnly(t, h.tree.Root, aliceID, now)}},
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
		{"Unix socket", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: adminapi.PeerCredInfo("admin:root")}), "admin:root"},
		{"no auth info", peer.NewContext(context.Background(), &peer.Peer{}), "admin:unknown"},
	} {
		_, err := h.m.UnaryInterceptor()(tc.ctx, nil, info, handler)
		wantCode(t, err, codes.PermissionDenied)
		if called {
			t.Fatalf("%s: the interceptor let the call through", tc.name)
		}
		if got := adminapi.Actor(tc.ctx); got != tc.wantActor {
			t.Fatalf("%s: actor %q, want %q", tc.name, got, tc.wantActor)
		}
	}
}

func TestMTLSRootsFollowRotation(t *testing.T) {
	h := newMTLSHarness(t)
	alice := adminCert(t, h.tree.Root, "admin-alice", aliceID, h.clock.Now().Add(-time.Minute), time.Hour)
	var roots atomic.Pointer[trust.Bundle]
	roots.Store(h.tree.Bundle)
	m, err := adminapi.NewMTLS(adminapi.MTLSConfig{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &h.server, nil },
		Roots:          roots.Load,
		Admins:         []spiffeid.ID{spiffeid.RequireFromString(aliceID)},
		Revocations:    h.deny,
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
	other := testkit.New(t, testkit.Options{TrustDomain: "admin.example", RootKey: "other-root"})
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
	roots := func() *trust.Bundle { return nil }
	admins := []spiffeid.ID{spiffeid.RequireFromString(aliceID)}
	deny := &fakeDenyList{}
	for name, cfg := range map[string]adminapi.MTLSConfig{
		"no certificate": {Roots: roots, Admins: admins, Revocations: deny},
		"no roots":       {GetCertificate: getCert, Admins: admins, Revocations: deny},
		"no admins":      {GetCertificate: getCert, Roots: roots, Revocations: deny},
		"zero admin":     {GetCertificate: getCert, Roots: roots, Admins: []spiffeid.ID{{}}, Revocations: deny},
		"no deny-list":   {GetCertificate: getCert, Roots: roots, Admins: admins},
	} {
		if _, err := adminapi.NewMTLS(cfg); err == nil {
			t.Errorf("%s: NewMTLS accepted it", name)
		}
	}
	if _, err := adminapi.NewMTLS(adminapi.MTLSConfig{GetCertificate: getCert, Roots: roots, Admins: admins, Revocations: deny}); err != nil {
		t.Fatal(err)
	}
}

// serverOnly signs, with root, a certificate for id with the server
// authentication usage only.
func serverOnly(t *testing.T, root *ca.Authority, id string, now time.Time) tls.Certificate {
	t.Helper()
	key := testkit.Key(t, "admin-alice")
	u, _ := url.Parse(id)
	leaf, err := root.SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), URIs: []*url.URL{u}, TTL: time.Hour, Now: now,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// TestMTLSRevocation: an admin certificate revoked on the deny-list (by
// serial or SPIFFE ID) or on its root's CRL is refused at the next call on
// an open connection and at the next handshake, and so is every admin
// while the deny-list cannot be trusted.
func TestMTLSRevocation(t *testing.T) {
	h := newMTLSHarness(t)
	now := h.clock.Now()
	alice := adminCert(t, h.tree.Root, "admin-alice", aliceID, now.Add(-time.Minute), time.Hour)
	serial := trust.SerialHex(alice.Leaf.SerialNumber)
	rootCRL := func(serials ...*big.Int) []trust.CRL {
		crl, _, err := h.tree.Root.SignCRL(ca.CRLRequest{Serials: serials, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return []trust.CRL{crl}
	}
	interCRL := func(serials ...*big.Int) []trust.CRL {
		crl, _, err := h.tree.Intermediate.SignCRL(ca.CRLRequest{Serials: serials, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return []trust.CRL{crl}
	}
	for _, tc := range []struct {
		name          string
		serial, id    string
		denyErr       error
		crls          []trust.CRL
		wantConnected bool
	}{
		{name: "serial on the deny-list", serial: serial},
		{name: "SPIFFE ID on the deny-list", id: aliceID},
		{name: "deny-list stale", denyErr: errors.New("deny-list stale")},
		{name: "serial on the root's CRL", crls: rootCRL(alice.Leaf.SerialNumber)},
		{name: "another serial on the root's CRL", crls: rootCRL(big.NewInt(7)), wantConnected: true},
		// Only the root that signed an admin certificate can revoke it.
		{name: "serial on an intermediate's CRL", crls: interCRL(alice.Leaf.SerialNumber), wantConnected: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.deny.set("", "", nil)
			h.crls.Store(&[]trust.CRL{})
			client := h.dial(t, alice)
			if _, err := client.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{}); err != nil {
				t.Fatalf("before the revocation: %v", err)
			}
			h.deny.set(tc.serial, tc.id, tc.denyErr)
			crls := tc.crls
			h.crls.Store(&crls)
			before := h.echo.calls.Load()
			_, err := client.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
			if tc.wantConnected {
				if err != nil {
					t.Fatalf("open connection: %v, want the call answered", err)
				}
			} else {
				wantCode(t, err, codes.PermissionDenied)
				if h.echo.calls.Load() != before {
					t.Fatal("a revoked admin's call on an open connection reached the service")
				}
			}
			_, err = h.dial(t, alice).ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
			if tc.wantConnected {
				if err != nil {
					t.Fatalf("new connection: %v, want the call answered", err)
				}
				return
			}
			wantCode(t, err, codes.Unavailable) // the handshake failed
		})
	}
}

// Silent TCP connections to the admin listener (no TLS handshake) are
// bounded per peer: past 32 the listener closes them at once, and an admin
// is still served once they go away.
func TestMTLSListenerBoundsSilentConnections(t *testing.T) {
	h := newMTLSHarness(t)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	closedAtOnce := 0
	for range 40 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closedAtOnce++
		}
	}
	if closedAtOnce != 40-32 {
		t.Fatalf("%d of 40 silent connections closed at once, want %d (32 per peer)", closedAtOnce, 40-32)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	alice := leafCert(t, h.tree.Root, "alice", aliceID, "", h.clock.Now().Add(-time.Minute), time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := h.dial(t, alice).ListRevocations(context.Background(), &meshcav1.ListRevocationsRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin after the silent connections closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &adminapi.UnixConfig{}, &adminapi.MTLSConfig{})
}
