package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// fakeIssuer serves the Istio CA API and, unless built without it,
// meshca.v1.BundleService and meshca.v1.JWTSVIDService (jwt_test.go) over
// real TLS on loopback. Its serving
// certificate and the leaves it issues come from an intermediate that a
// test can switch to another root. It signs any CSR for webID; it checks no
// token.
type fakeIssuer struct {
	pb.UnimplementedIstioCertificateServiceServer
	meshcav1.UnimplementedBundleServiceServer
	meshcav1.UnimplementedJWTSVIDServiceServer

	addr       string
	bundleFile string // the CA bundle file for agents: the first root

	mu      sync.Mutex
	root    *ca.Authority
	inter   *ca.Authority
	serving *tls.Certificate
	bundle  *meshcav1.Bundle // nil: none yet
	changed chan struct{}    // closed and replaced by every pushBundle
	watches []uint64         // known_sequence of every WatchBundle call
	// mint, when set, makes the leaf for a CSR's key instead of a good
	// one for webID: a misbehaving issuer.
	mint  func(inter *ca.Authority, pub crypto.PublicKey) (*x509.Certificate, error)
	conns []net.Conn // accepted so far
	// calls counts requests that reached the server; tokens those that
	// carried authorization metadata.
	calls, tokens int
	// jwtKey signs the JWT-SVIDs MintJWTSVID returns (nil: Unimplemented);
	// jwtDenied refuses them (PermissionDenied); mints counts those signed.
	jwtKey    *jwtKey
	jwtDenied bool
	mints     int
	// mintHold, when not nil, holds every mint until it is closed;
	// mintStarted receives one value per mint held.
	mintHold    chan struct{}
	mintStarted chan struct{}
}

// record counts a request and whether it carried a token.
func (fi *fakeIssuer) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.calls++
	if len(md.Get("authorization")) > 0 {
		fi.tokens++
	}
}

// received returns how many requests, and how many tokens, arrived.
func (fi *fakeIssuer) received() (calls, tokens int) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.calls, fi.tokens
}

// newFakeIssuer starts a fake issuer for tree until the test ends. With
// bundles false it does not register BundleService, like a plain Istio CA.
func newFakeIssuer(t *testing.T, tree *testkit.Tree, bundles bool) *fakeIssuer {
	t.Helper()
	fi := &fakeIssuer{changed: make(chan struct{}), bundleFile: filepath.Join(t.TempDir(), "bundle.pem")}
	fi.setCA(t, tree.Root, tree.Intermediate)
	if err := os.WriteFile(fi.bundleFile, tree.Bundle.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			fi.mu.Lock()
			defer fi.mu.Unlock()
			return fi.serving, nil
		},
	})), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		fi.record(ctx)
		return h(ctx, req)
	}), grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		fi.record(ss.Context())
		return h(srv, ss)
	}))
	pb.RegisterIstioCertificateServiceServer(g, fi)
	if bundles {
		meshcav1.RegisterBundleServiceServer(g, fi)
		meshcav1.RegisterJWTSVIDServiceServer(g, fi)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fi.addr = lis.Addr().String()
	done := make(chan error, 1)
	go func() { done <- g.Serve(trackingListener{lis, fi}) }()
	t.Cleanup(func() {
		g.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("fake issuer Serve: %v", err)
		}
	})
	return fi
}

// setCA makes inter (under root) sign the serving certificate and every
// leaf from now on.
func (fi *fakeIssuer) setCA(t *testing.T, root, inter *ca.Authority) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req := ca.LeafRequest{PublicKey: key.Public(), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, TTL: time.Hour,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if id, ok := trust.ServingServerID(inter.Certificate); ok {
		req.URIs = []*url.URL{id.URL()}
	}
	leaf, err := inter.SignLeaf(req)
	if err != nil {
		t.Fatal(err)
	}
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.root, fi.inter = root, inter
	fi.serving = &tls.Certificate{Certificate: [][]byte{leaf.Raw, inter.Certificate.Raw}, PrivateKey: key, Leaf: leaf}
}

// setServing makes the issuer present leaf (with key), under its current
// intermediate, at every later handshake.
func (fi *fakeIssuer) setServing(leaf *x509.Certificate, key crypto.Signer) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.serving = &tls.Certificate{Certificate: [][]byte{leaf.Raw, fi.inter.Certificate.Raw}, PrivateKey: key, Leaf: leaf}
}

// setMint makes the issuer mint leaves with mint (nil: good ones).
func (fi *fakeIssuer) setMint(mint func(inter *ca.Authority, pub crypto.PublicKey) (*x509.Certificate, error)) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.mint = mint
}

// dropConnections closes every connection accepted so far, so that clients
// must connect (and verify the serving certificate) again.
func (fi *fakeIssuer) dropConnections() {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	for _, c := range fi.conns {
		_ = c.Close() // already closed is fine
	}
	fi.conns = nil
}

type trackingListener struct {
	net.Listener
	fi *fakeIssuer
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.fi.mu.Lock()
		l.fi.conns = append(l.fi.conns, c)
		l.fi.mu.Unlock()
	}
	return c, err
}

// pushBundle publishes b to every watch, as is: it may be malformed or
// older than the last one.
func (fi *fakeIssuer) pushBundle(b *meshcav1.Bundle) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.bundle = b
	close(fi.changed)
	fi.changed = make(chan struct{})
}

// watchCalls returns the known_sequence of every WatchBundle call so far.
func (fi *fakeIssuer) watchCalls() []uint64 {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return append([]uint64(nil), fi.watches...)
}

func (fi *fakeIssuer) CreateCertificate(_ context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil {
		return nil, status.Error(codes.InvalidArgument, "csr is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ttl := time.Duration(req.GetValidityDuration()) * time.Second
	if ttl <= 0 {
		ttl = time.Hour
	}
	fi.mu.Lock()
	root, inter, mint := fi.root, fi.inter, fi.mint
	fi.mu.Unlock()
	if mint == nil {
		mint = func(inter *ca.Authority, pub crypto.PublicKey) (*x509.Certificate, error) {
			return inter.SignLeaf(ca.LeafRequest{PublicKey: pub, URIs: []*url.URL{webID.URL()}, TTL: ttl})
		}
	}
	leaf, err := mint(inter, csr.PublicKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pb.IstioCertificateResponse{CertChain: pemStrings(leaf, inter.Certificate, root.Certificate)}, nil
}

// WatchBundle sends every pushed bundle (the current one first unless its
// sequence is known_sequence), without checking sequences: receivers must.
func (fi *fakeIssuer) WatchBundle(req *meshcav1.WatchBundleRequest, stream grpc.ServerStreamingServer[meshcav1.WatchBundleResponse]) error {
	fi.mu.Lock()
	fi.watches = append(fi.watches, req.GetKnownSequence())
	b, changed := fi.bundle, fi.changed
	fi.mu.Unlock()
	if b != nil && b.GetSequence() != req.GetKnownSequence() {
		if err := stream.Send(&meshcav1.WatchBundleResponse{Bundle: b}); err != nil {
			return err
		}
	}
	for {
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
		fi.mu.Lock()
		b, changed = fi.bundle, fi.changed
		fi.mu.Unlock()
		if err := stream.Send(&meshcav1.WatchBundleResponse{Bundle: b}); err != nil {
			return err
		}
	}
}

// trustBundle builds a bundle: own trust domain td with roots, and the
// federated domains given as name -> roots.
func trustBundle(seq uint64, td string, own []*x509.Certificate, federated map[string][]*x509.Certificate) *meshcav1.Bundle {
	b := &meshcav1.Bundle{Sequence: seq, TrustDomains: []*meshcav1.TrustDomainBundle{{TrustDomain: td, X509Authorities: derOf(own...)}}}
	for name, roots := range federated {
		b.TrustDomains = append(b.TrustDomains, &meshcav1.TrustDomainBundle{TrustDomain: name, X509Authorities: derOf(roots...), Federated: true})
	}
	return b
}

// signedProto returns pb signed by signer, as the root service signs every
// bundle it publishes (issuers relay the signature).
func signedProto(t testing.TB, pb *meshcav1.Bundle, signer *ca.Authority) *meshcav1.Bundle {
	t.Helper()
	tb, err := trust.TrustBundleFromProto(pb)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.SignTrustBundle(tb, signer.Signer, signer.Certificate); err != nil {
		t.Fatal(err)
	}
	return tb.ToProto()
}

func derOf(certs ...*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

// federatedRoot returns a root CA for another mesh, named name.
// federatedOther is the federated bundle of otherTD with roots.
func federatedOther(t testing.TB, roots ...*x509.Certificate) []trust.DomainBundle {
	t.Helper()
	return []trust.DomainBundle{{TrustDomain: otherTD, Roots: mustBundle(t, roots...), Federated: true}}
}

func federatedRoot(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	r, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "federated-"+name), CommonName: name + " root"})
	if err != nil {
		t.Fatal(err)
	}
	return r.Certificate
}
