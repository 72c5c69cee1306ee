package root

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/testkit"
)

// firstBundle opens a bundle watch on conn and returns the error of its
// first message (nil: a bundle came; the stream stays open until ctx ends).
func firstBundle(ctx context.Context, t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := meshcav1.NewBundleServiceClient(conn).WatchBundle(ctx, &meshcav1.WatchBundleRequest{})
	if err != nil {
		return err
	}
	timeout := time.AfterFunc(10*time.Second, cancel)
	defer timeout.Stop()
	_, err = stream.Recv()
	return err
}

func TestWatchBundleRequiresAnIssuerCredential(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	anon := h.dial(addr, nil)
	east, err := enroll(t, anon, h.addCluster("east", "east.example"))
	if err != nil {
		t.Fatal(err)
	}
	west, err := enroll(t, anon, h.addCluster("west", "west.example"))
	if err != nil {
		t.Fatal(err)
	}
	revoke := &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "west"}, Reason: "test"}
	if _, err := h.root.revoke(context.Background(), revoke, "admin:test"); err != nil {
		t.Fatal(err)
	}
	// East's issuer mints the credential's own ID under its intermediate:
	// no issuer credential.
	minted := mintedCredential(t, east)

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want codes.Code
	}{
		{"no credential", nil, codes.Unauthenticated},
		{"credential ID minted under a cluster intermediate", minted, codes.Unauthenticated},
		{"credential of a revoked cluster", west.tlsCert(), codes.PermissionDenied},
		{"issuer credential", east.tlsCert(), codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := h.dial(addr, tc.cert)
			n := 1
			if tc.want != codes.OK {
				n = 20 // many streams, none held
			}
			for range n {
				wantCode(t, firstBundle(t.Context(), t, conn), tc.want)
			}
		})
	}
}

func TestWatchBundleCapsPerPeerAndInAll(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Limits = grpclimit.Config{MaxWatches: 3, MaxWatchesPerPeer: 2} })
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	from := func(local string) *grpc.ClientConn {
		cfg := &tls.Config{RootCAs: h.rootsPool(), ServerName: "localhost", Time: h.clock.Now, Certificates: []tls.Certificate{*east.tlsCert()}}
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
				return d.DialContext(ctx, "tcp", addr)
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	a, b, c := from("127.0.0.1"), from("127.0.0.2"), from("127.0.0.3")
	ctx, cancel := context.WithCancel(t.Context())
	for _, conn := range []*grpc.ClientConn{a, a, b} {
		wantCode(t, firstBundle(ctx, t, conn), codes.OK)
	}
	wantCode(t, firstBundle(ctx, t, b), codes.ResourceExhausted) // in all
	cancel()
	// The slots come back as the server sees the streams end: until all
	// three have, an attempt may still be refused; its own streams end
	// with it, so the next attempt starts from what is held.
	testkit.Eventually(t, 5*time.Second, "watch slots given back", func() error {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		for _, conn := range []*grpc.ClientConn{a, a, c} {
			if err := firstBundle(ctx, t, conn); err != nil {
				return err
			}
		}
		if err := firstBundle(ctx, t, a); status.Code(err) != codes.ResourceExhausted { // per peer
			return fmt.Errorf("a third watch from one peer: %v, want ResourceExhausted", err)
		}
		return nil
	})
}

func TestServeRefusesConnectionsPastTheCap(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Limits = grpclimit.Config{MaxConnectionsPerPeer: 2} })
	addr := h.serve()
	cfg := &tls.Config{RootCAs: h.rootsPool(), ServerName: "localhost", Time: h.clock.Now, NextProtos: []string{"h2"}}
	for i, ok := range []bool{true, true, false} {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		if (err == nil) != ok {
			t.Fatalf("connection %d: %v, want accepted=%v", i+1, err, ok)
		}
	}
}

// mintedCredential is a certificate for the credential ID of s's cluster,
// signed by s's intermediate, as a rogue issuer could make one.
func mintedCredential(t *testing.T, s *issuerSide) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	leaf, err := s.authority(t).SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), URIs: []*url.URL{s.cred.URIs[0]}, TTL: time.Hour, Now: s.inter.NotBefore.Add(time.Minute),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw, s.inter.Raw}, PrivateKey: key, Leaf: leaf}
}
