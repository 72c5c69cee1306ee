package issuer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// rootServerName is the name in the fake root's serving certificate.
const rootServerName = "root.test"

// fakeRoot is a hand-written root CA for what the real one (ca/root/roottest)
// cannot be made to do: publish bundles under chosen sequences or
// signatures, serve under an impostor's certificate, and answer in memory
// inside a testing/synctest bubble (memRoot). It signs as meshca's root
// service does: the credential directly under the active root, for
// spiffe://<td>/meshca/cluster/<name>; a name-constrained intermediate under
// the active root. Its bundle lists every root for every registered trust
// domain and changes sequence only on publish. serve puts it on real TLS
// gRPC (RootService and BundleService).
type fakeRoot struct {
	tb       testing.TB
	now      func() time.Time
	interTTL time.Duration
	credTTL  time.Duration

	mu       sync.Mutex
	roots    []*ca.Authority
	active   int
	tokens   map[string]string // join token -> cluster name
	clusters map[string]fakeCluster
	seq      uint64
	changed  chan struct{}
	// signWith, when set, signs bundles instead of the active root; unsigned
	// publishes them without a signature.
	signWith *ca.Authority
	unsigned bool
	enrolls  int
	// calls counts every RPC that reached the server, refused or not.
	calls int
	// impostor, when set, signs the serving certificate instead of the
	// active root: a cluster's issuer posing as the root.
	impostor *ca.Authority

	addr string
}

type fakeCluster struct {
	name string
	td   spiffeid.TrustDomain
}

// newFakeRoot returns a root with one active root certificate. now nil
// means time.Now; TTLs zero mean 1h intermediates and 30d credentials.
func newFakeRoot(tb testing.TB, now func() time.Time, interTTL time.Duration) *fakeRoot {
	tb.Helper()
	if now == nil {
		now = time.Now
	}
	if interTTL == 0 {
		interTTL = time.Hour
	}
	r := &fakeRoot{tb: tb, now: now, interTTL: interTTL, credTTL: 30 * 24 * time.Hour,
		tokens: map[string]string{}, clusters: map[string]fakeCluster{}, seq: 1000, changed: make(chan struct{})}
	r.roots = append(r.roots, r.newRoot("fake root 1"))
	return r
}

func (r *fakeRoot) newRoot(name string) *ca.Authority {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		r.tb.Fatal(err)
	}
	root, err := ca.NewRoot(ca.RootConfig{Signer: key, CommonName: name, Now: r.now()})
	if err != nil {
		r.tb.Fatal(err)
	}
	return root
}

// addCluster registers a cluster and returns a one-time join token.
func (r *fakeRoot) addCluster(name, td string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clusters[name] = fakeCluster{name: name, td: spiffeid.RequireTrustDomainFromString(td)}
	tok := fmt.Sprintf("join-%s-%d", name, len(r.tokens)+r.enrolls)
	r.tokens[tok] = name
	return tok
}

// rootCert returns root i's certificate.
func (r *fakeRoot) rootCert(i int) *x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roots[i].Certificate
}

// initialRoots is what `meshca admin cluster add` would print: root 0.
func (r *fakeRoot) initialRoots() *trust.Bundle {
	b, err := trust.NewBundle(r.rootCert(0))
	if err != nil {
		r.tb.Fatal(err)
	}
	return b
}

// rotate adds a new root to the bundle; it does not sign until activate.
func (r *fakeRoot) rotate() int {
	root := r.newRoot(fmt.Sprintf("fake root %d", len(r.roots)+1))
	r.mu.Lock()
	r.roots = append(r.roots, root)
	n := len(r.roots) - 1
	r.mu.Unlock()
	r.publish()
	return n
}

// activate makes root i the one that signs and serves.
func (r *fakeRoot) activate(i int) {
	r.mu.Lock()
	r.active = i
	r.mu.Unlock()
	r.publish()
}

// publish bumps the bundle's sequence and wakes watchers.
func (r *fakeRoot) publish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	close(r.changed)
	r.changed = make(chan struct{})
}

// setSigning makes the next bundles signed by signer (nil: the active
// root) or, with unsigned, not signed at all, and publishes.
func (r *fakeRoot) setSigning(signer *ca.Authority, unsigned bool) {
	r.mu.Lock()
	r.signWith, r.unsigned = signer, unsigned
	r.mu.Unlock()
	r.publish()
}

// setSequence forces the next published sequence (to test receivers).
func (r *fakeRoot) setSequence(seq uint64) {
	r.mu.Lock()
	r.seq = seq
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *fakeRoot) bundle() *trust.TrustBundle {
	tb, _ := r.current()
	return tb
}

func (r *fakeRoot) current() (*trust.TrustBundle, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var certs []*x509.Certificate
	for _, a := range r.roots {
		certs = append(certs, a.Certificate)
	}
	roots, err := trust.NewBundle(certs...)
	if err != nil {
		r.tb.Error(err)
	}
	tb := &trust.TrustBundle{Sequence: r.seq, ActiveRoot: trust.Fingerprint(r.roots[r.active].Certificate)}
	seen := map[spiffeid.TrustDomain]bool{}
	for _, c := range r.clusters {
		if !seen[c.td] {
			seen[c.td] = true
			tb.Domains = append(tb.Domains, trust.DomainBundle{TrustDomain: c.td, Roots: roots})
		}
	}
	// Signed by the active root, as the root service does.
	signer := r.roots[r.active]
	if r.signWith != nil {
		signer = r.signWith
	}
	if !r.unsigned {
		if err := ca.SignTrustBundle(tb, signer.Signer, signer.Certificate); err != nil {
			r.tb.Error(err)
		}
	}
	// Through the wire form, which sorts domains as receivers do.
	out, err := trust.TrustBundleFromProto(tb.ToProto())
	if err != nil {
		r.tb.Error(err)
	}
	return out, r.changed
}

func (r *fakeRoot) activeRoot() *ca.Authority {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roots[r.active]
}

func (r *fakeRoot) signIntermediate(c fakeCluster, csrDER []byte) (*x509.Certificate, error) {
	csr, err := parseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	// Like the real root: the CSR's SANs are the serving names asked for.
	names := csr.DNSNames
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	return r.activeRoot().SignIntermediate(ca.IntermediateRequest{
		PublicKey: csr.PublicKey, TrustDomain: c.td, Cluster: c.name, ServingNames: names, TTL: r.interTTL, Now: r.now(),
	})
}

func (r *fakeRoot) signCredential(c fakeCluster, csrDER []byte) (*x509.Certificate, error) {
	csr, err := parseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	id, err := spiffeid.FromSegments(c.td, "meshca", "cluster", c.name)
	if err != nil {
		return nil, err
	}
	return r.activeRoot().SignLeaf(ca.LeafRequest{
		PublicKey: csr.PublicKey, URIs: []*url.URL{id.URL()}, TTL: r.credTTL, Now: r.now(),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func parseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	return csr, nil
}

func (r *fakeRoot) enroll(req *meshcav1.EnrollRequest) (*meshcav1.EnrollResponse, error) {
	r.mu.Lock()
	name, ok := r.tokens[req.GetJoinToken()]
	delete(r.tokens, req.GetJoinToken())
	c, registered := r.clusters[name]
	r.mu.Unlock()
	if !ok || !registered {
		return nil, status.Error(codes.Unauthenticated, "authentication failed")
	}
	cred, err := r.signCredential(c, req.GetCredentialCsr())
	if err != nil {
		return nil, err
	}
	inter, err := r.signIntermediate(c, req.GetIntermediateCsr())
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.enrolls++
	r.mu.Unlock()
	return &meshcav1.EnrollResponse{
		Cluster: c.name, TrustDomain: c.td.Name(), CredentialChain: [][]byte{cred.Raw},
		IntermediateChain: [][]byte{inter.Raw}, Bundle: r.bundle().ToProto(),
	}, nil
}

// caller returns the cluster of an issuer authenticated by the verified
// chain chain.
func (r *fakeRoot) caller(chain []*x509.Certificate) (fakeCluster, error) {
	if len(chain) != 2 || len(chain[0].URIs) != 1 {
		return fakeCluster{}, status.Error(codes.Unauthenticated, "authentication failed")
	}
	id, err := spiffeid.FromURI(chain[0].URIs[0])
	if err != nil {
		return fakeCluster{}, status.Error(codes.Unauthenticated, "authentication failed")
	}
	r.mu.Lock()
	c, ok := r.clusters[strings.TrimPrefix(id.Path(), "/meshca/cluster/")]
	r.mu.Unlock()
	if !ok || c.td != id.TrustDomain() {
		return fakeCluster{}, status.Error(codes.PermissionDenied, "unknown cluster")
	}
	return c, nil
}

// renew serves an issuer authenticated by the verified chain chain.
func (r *fakeRoot) renew(chain []*x509.Certificate, req *meshcav1.RenewRequest) (*meshcav1.RenewResponse, error) {
	c, err := r.caller(chain)
	if err != nil {
		return nil, err
	}
	inter, err := r.signIntermediate(c, req.GetIntermediateCsr())
	if err != nil {
		return nil, err
	}
	resp := &meshcav1.RenewResponse{IntermediateChain: [][]byte{inter.Raw}}
	if req.GetCredentialCsr() != nil {
		cred, err := r.signCredential(c, req.GetCredentialCsr())
		if err != nil {
			return nil, err
		}
		resp.CredentialChain = [][]byte{cred.Raw}
	}
	resp.Bundle = r.bundle().ToProto()
	return resp, nil
}

// upstreamConfig configures an Upstream of r, trusting root 0; a nil log
// discards.
func (r *fakeRoot) upstreamConfig(dir, token string, log *slog.Logger) issuer.UpstreamConfig {
	return upstreamConfigAt(r.addr, rootServerName, r.initialRoots(), r.now, dir, token, log)
}

// serve starts the gRPC server on a loopback port until the test ends.
func (r *fakeRoot) serve() {
	r.tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.tb.Fatal(err)
	}
	r.addr = lis.Addr().String()
	servingKey := newKey(r.tb)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		signer, chain, uris := r.activeRoot(), [][]byte(nil), []*url.URL{trust.RootServerURI}
		r.mu.Lock()
		if r.impostor != nil {
			signer, chain, uris = r.impostor, [][]byte{r.impostor.Certificate.Raw}, nil
		}
		r.mu.Unlock()
		leaf, err := signer.SignLeaf(ca.LeafRequest{
			PublicKey: servingKey.Public(), DNSNames: []string{rootServerName}, URIs: uris,
			TTL: time.Hour, Now: r.now(),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return nil, err
		}
		clientCAs := x509.NewCertPool()
		r.mu.Lock()
		for _, a := range r.roots {
			clientCAs.AddCert(a.Certificate)
		}
		r.mu.Unlock()
		return &tls.Config{
			MinVersion: tls.VersionTLS12, Time: r.now, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs,
			Certificates: []tls.Certificate{{Certificate: append([][]byte{leaf.Raw}, chain...), PrivateKey: servingKey, Leaf: leaf}},
		}, nil
	}}
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		r.mu.Lock()
		r.calls++
		r.mu.Unlock()
		return h(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConfig)), grpc.UnaryInterceptor(count))
	meshcav1.RegisterRootServiceServer(srv, fakeRootService{r: r})
	meshcav1.RegisterBundleServiceServer(srv, fakeBundleService{r: r})
	go srv.Serve(lis)
	r.tb.Cleanup(srv.Stop)
}

type fakeRootService struct {
	meshcav1.UnimplementedRootServiceServer
	r *fakeRoot
}

func (s fakeRootService) Enroll(_ context.Context, req *meshcav1.EnrollRequest) (*meshcav1.EnrollResponse, error) {
	return s.r.enroll(req)
}

func (s fakeRootService) Renew(ctx context.Context, req *meshcav1.RenewRequest) (*meshcav1.RenewResponse, error) {
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "authentication failed")
	}
	return s.r.renew(info.State.VerifiedChains[0], req)
}

type fakeBundleService struct {
	meshcav1.UnimplementedBundleServiceServer
	r *fakeRoot
}

// WatchBundle requires an issuer credential, as the root does.
func (s fakeBundleService) WatchBundle(req *meshcav1.WatchBundleRequest, stream grpc.ServerStreamingServer[meshcav1.WatchBundleResponse]) error {
	p, _ := peer.FromContext(stream.Context())
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "authentication failed")
	}
	if _, err := s.r.caller(info.State.VerifiedChains[0]); err != nil {
		return err
	}
	known := req.GetKnownSequence()
	for {
		tb, changed := s.r.current()
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

// memRoot is an issuer.RootClient that calls a fakeRoot in memory, for
// loops under testing/synctest. down makes NewIntermediate fail as an
// unreachable root does; reject as a root that refuses the credential.
type memRoot struct {
	root    *fakeRoot
	cluster string

	mu     sync.Mutex
	down   bool
	reject bool
	// wrongTD makes the root sign for another trust domain.
	wrongTD bool
	calls   []time.Time
}

var _ issuer.RootClient = (*memRoot)(nil)

func (m *memRoot) setDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

func (m *memRoot) setWrongTD(wrong bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wrongTD = wrong
}

func (m *memRoot) setReject(reject bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reject = reject
}

func (m *memRoot) callTimes() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.calls...)
}

func (m *memRoot) NewIntermediate(context.Context) (*ca.Authority, *trust.TrustBundle, error) {
	m.mu.Lock()
	m.calls = append(m.calls, time.Now())
	down, reject, wrongTD := m.down, m.reject, m.wrongTD
	m.mu.Unlock()
	switch {
	case down:
		return nil, nil, status.Error(codes.Unavailable, "connection refused")
	case reject:
		return nil, nil, fmt.Errorf("renew: %w: credential rejected", issuer.ErrRejected)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	m.root.mu.Lock()
	c := m.root.clusters[m.cluster]
	m.root.mu.Unlock()
	if wrongTD {
		c.td = spiffeid.RequireTrustDomainFromString("elsewhere.example")
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := m.root.signIntermediate(c, csr)
	if err != nil {
		return nil, nil, err
	}
	a, err := ca.NewAuthority(cert, key)
	return a, m.root.bundle(), err
}

func (m *memRoot) WatchBundle(ctx context.Context, fn func(*trust.TrustBundle)) error {
	var held uint64
	for {
		tb, changed := m.root.current()
		if tb.Sequence > held {
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
