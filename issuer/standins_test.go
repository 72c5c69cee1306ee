package issuer_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/root/roottest"
	"github.com/meshca/meshca/trust"
)

// Stand-ins for a root server that misbehaves in ways the real one never
// does. Each answers with what the real root (r) publishes, or with
// nothing; none re-implements enrolment, renewal or authentication.

// tamperingRoot serves at the address of the real root r, which it
// replaces, under r's own serving certificate: a root server whose bundles
// are altered before they leave it. WatchBundle relays every bundle r
// publishes, and Renew answers with r's current bundle and nothing else,
// each passed through tamper first.
type tamperingRoot struct {
	meshcav1.UnimplementedBundleServiceServer
	meshcav1.UnimplementedRootServiceServer
	r *roottest.Root

	mu     sync.Mutex
	tamper func(*trust.TrustBundle) *trust.TrustBundle
}

// serveTampering stops serving r and serves a tamperingRoot in its place
// until the test ends.
func serveTampering(t *testing.T, r *roottest.Root) *tamperingRoot {
	t.Helper()
	getCert, err := r.Service.ServingCertificate()
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert, Time: r.Clock.Now,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: r.Roots().Pool()}
	s := &tamperingRoot{r: r, tamper: func(tb *trust.TrustBundle) *trust.TrustBundle { return tb }}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConfig)))
	meshcav1.RegisterBundleServiceServer(srv, s)
	meshcav1.RegisterRootServiceServer(srv, s)
	r.Stop()
	serveAt(t, srv, r.Addr)
	return s
}

// serveAt serves srv on addr until the test ends.
func serveAt(t *testing.T, srv *grpc.Server, addr string) {
	t.Helper()
	var lis net.Listener
	var err error
	for range 100 { // a port just closed may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

// setTamper alters every bundle from now on with f.
func (s *tamperingRoot) setTamper(f func(*trust.TrustBundle) *trust.TrustBundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tamper = f
}

func (s *tamperingRoot) current() (*trust.TrustBundle, <-chan struct{}) {
	tb, changed := s.r.Service.Current()
	s.mu.Lock()
	tamper := s.tamper
	s.mu.Unlock()
	return tamper(tb), changed
}

func (s *tamperingRoot) WatchBundle(req *meshcav1.WatchBundleRequest, stream grpc.ServerStreamingServer[meshcav1.WatchBundleResponse]) error {
	known := req.GetKnownSequence()
	for {
		tb, changed := s.current()
		if tb.Sequence != known {
			if err := stream.Send(&meshcav1.WatchBundleResponse{Bundle: tb.ToProto()}); err != nil {
				return err
			}
			known = tb.Sequence
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (s *tamperingRoot) Renew(context.Context, *meshcav1.RenewRequest) (*meshcav1.RenewResponse, error) {
	tb, _ := s.current()
	return &meshcav1.RenewResponse{Bundle: tb.ToProto()}, nil
}

// resigned returns a copy of tb signed by signer instead.
func resigned(t testing.TB, tb *trust.TrustBundle, signer *ca.Authority) *trust.TrustBundle {
	out := unsigned(t, tb)
	if err := ca.SignTrustBundle(out, signer.Signer, signer.Certificate); err != nil {
		t.Error(err)
	}
	return out
}

// unsigned returns a copy of tb without its signature.
func unsigned(t testing.TB, tb *trust.TrustBundle) *trust.TrustBundle {
	out, err := trust.TrustBundleFromProto(tb.ToProto())
	if err != nil {
		t.Error(err)
	}
	out.Signature, out.Signer = nil, [32]byte{}
	return out
}

// countingServer is a gRPC server that serves nothing and counts every
// request that reaches it, unary or streaming.
type countingServer struct {
	mu    sync.Mutex
	calls int
}

// serve serves under cert (leaf first) with key on a loopback port until
// the test ends and returns its address.
func (c *countingServer) serve(t *testing.T, chain []*x509.Certificate, key *tls.Certificate) string {
	t.Helper()
	for _, cert := range chain {
		key.Certificate = append(key.Certificate, cert.Raw)
	}
	key.Leaf = chain[0]
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*key}})),
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
			c.mu.Lock()
			c.calls++
			c.mu.Unlock()
			return nil
		}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func (c *countingServer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// activeRootAuthority is r's active root with its key, loaded from r's key
// directory: for certificates the root service itself would never sign.
func activeRootAuthority(t *testing.T, r *roottest.Root) *ca.Authority {
	t.Helper()
	active := r.Active()
	stored, err := r.Store.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stored {
		if fp := trust.Fingerprint(active); s.Fingerprint != hex.EncodeToString(fp[:]) {
			continue
		}
		key, err := r.Config.Keys.Load(t.Context(), s.KeyRef)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ca.NewAuthority(active, key)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	t.Fatal("the active root is not in the store")
	return nil
}
