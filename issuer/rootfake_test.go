package issuer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
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
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
)

// rootServerName is the name in the fake root's serving certificate.
const rootServerName = "root.test"

// fakeRoot is a hand-written root CA that signs as meshca's root service
// does: the credential directly under the active root, for
// spiffe://<td>/meshca/cluster/<name>; a name-constrained intermediate under
// the active root. Its bundle lists every root for every registered trust
// domain and changes sequence only on publish. serve puts it on real TLS
// gRPC (RootService and BundleService); memRoot calls it in memory.
type fakeRoot struct {
	tb       testing.TB
	now      func() time.Time
	interTTL time.Duration
	credTTL  time.Duration

	mu    sync.Mutex
	roots []*ca.Authority
	// retired left the bundle but have not expired: like the root's, they
	// still authenticate issuer credentials.
	retired  []*ca.Authority
	active   int
	tokens   map[string]string // join token -> cluster name
	clusters map[string]fakeCluster
	seq      uint64
	changed  chan struct{}
	// signWith, when set, signs bundles instead of the active root; unsigned
	// publishes them without a signature.
	signWith     *ca.Authority
	unsigned     bool
	enrolls      int
	renewals     int
	credRenewals int
	// calls counts every RPC that reached the server, refused or not.
	calls int
	// impostor, when set, signs the serving certificate instead of the
	// active root: a cluster's issuer posing as the root.
	impostor *ca.Authority
	// crls are put in the bundle, per trust domain (setCRLs); received
	// are the CRLs issuers published, per cluster, newest last.
	crls     map[spiffeid.TrustDomain][]ca.CRL
	received map[string][][]ca.CRL

	addr string
	srv  *grpc.Server
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

func (r *fakeRoot) removeCluster(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.clusters, name)
}

// rootCert returns root i's certificate.
func (r *fakeRoot) rootCert(i int) *x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roots[i].Certificate
}

// initialRoots is what `meshca admin cluster add` would print: root 0.
func (r *fakeRoot) initialRoots() *ca.Bundle {
	b, err := ca.NewBundle(r.rootCert(0))
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

// retire drops root i from the bundle and from the roots trusted for
// credentials.
func (r *fakeRoot) retire(i int) {
	r.mu.Lock()
	r.retired = append(r.retired, r.roots[i])
	r.roots = append(r.roots[:i:i], r.roots[i+1:]...)
	if r.active >= i {
		r.active--
	}
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

func (r *fakeRoot) bundle() *ca.TrustBundle {
	tb, _ := r.current()
	return tb
}

func (r *fakeRoot) current() (*ca.TrustBundle, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var certs []*x509.Certificate
	for _, a := range r.roots {
		certs = append(certs, a.Certificate)
	}
	roots, err := ca.NewBundle(certs...)
	if err != nil {
		r.tb.Error(err)
	}
	tb := &ca.TrustBundle{Sequence: r.seq, ActiveRoot: ca.Fingerprint(r.roots[r.active].Certificate)}
	seen := map[spiffeid.TrustDomain]bool{}
	for _, c := range r.clusters {
		if !seen[c.td] {
			seen[c.td] = true
			tb.Domains = append(tb.Domains, ca.DomainBundle{TrustDomain: c.td, Roots: roots, CRLs: r.crls[c.td]})
		}
	}
	// Signed by the active root, as the root service does.
	signer := r.roots[r.active]
	if r.signWith != nil {
		signer = r.signWith
	}
	if !r.unsigned {
		if err := tb.Sign(signer.Signer, signer.Certificate); err != nil {
			r.tb.Error(err)
		}
	}
	// Through the wire form, which sorts domains as receivers do.
	out, err := ca.TrustBundleFromProto(tb.ToProto())
	if err != nil {
		r.tb.Error(err)
	}
	return out, r.changed
}

// setCRLs puts crls in td's entry of the bundle and publishes.
func (r *fakeRoot) setCRLs(td string, crls ...ca.CRL) {
	r.mu.Lock()
	if r.crls == nil {
		r.crls = map[spiffeid.TrustDomain][]ca.CRL{}
	}
	r.crls[spiffeid.RequireTrustDomainFromString(td)] = crls
	r.mu.Unlock()
	r.publish()
}

// publishedCRLs returns what cluster last published, nil for nothing.
func (r *fakeRoot) publishedCRLs(cluster string) []ca.CRL {
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := r.received[cluster]; len(got) > 0 {
		return got[len(got)-1]
	}
	return nil
}

func (r *fakeRoot) activeRoot() *ca.Authority {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roots[r.active]
}

func (r *fakeRoot) counts() (enrolls, renewals, credRenewals int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enrolls, r.renewals, r.credRenewals
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
	r.mu.Lock()
	r.renewals++
	if resp.CredentialChain != nil {
		r.credRenewals++
	}
	r.mu.Unlock()
	resp.Bundle = r.bundle().ToProto()
	return resp, nil
}

// serve starts (or restarts, on the same address) the gRPC server.
func (r *fakeRoot) serve() {
	r.tb.Helper()
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for range 50 { // the old listener's port may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.tb.Fatal(err)
	}
	r.addr = lis.Addr().String()
	servingKey := newKey(r.tb)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		signer, chain, uris := r.activeRoot(), [][]byte(nil), []*url.URL{ca.RootServerURI}
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
		for _, a := range append(r.roots, r.retired...) {
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
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(lis)
	r.tb.Cleanup(srv.Stop)
}

// stop closes the server and every connection to it.
func (r *fakeRoot) stop() {
	r.mu.Lock()
	srv := r.srv
	r.mu.Unlock()
	srv.Stop()
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

func (s fakeRootService) PublishCRLs(ctx context.Context, req *meshcav1.PublishCRLsRequest) (*meshcav1.PublishCRLsResponse, error) {
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "authentication failed")
	}
	c, err := s.r.caller(info.State.VerifiedChains[0])
	if err != nil {
		return nil, err
	}
	var crls []ca.CRL
	for _, pc := range req.GetCrls() {
		crls = append(crls, ca.CRL{DER: pc.GetDer(), IssuerChain: pc.GetIssuerChain()})
	}
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if s.r.received == nil {
		s.r.received = map[string][][]ca.CRL{}
	}
	s.r.received[c.name] = append(s.r.received[c.name], crls)
	return &meshcav1.PublishCRLsResponse{}, nil
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

func (m *memRoot) NewIntermediate(context.Context) (*ca.Authority, *ca.TrustBundle, error) {
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

func (m *memRoot) WatchBundle(ctx context.Context, fn func(*ca.TrustBundle)) error {
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

// captureLogs returns a debug-level JSON logger and its output, which is
// printed if the test fails.
func captureLogs(t testing.TB) (*slog.Logger, *testkit.LogBuffer) {
	buf := &testkit.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// assertNoSecrets fails if logs contain key material or any of secrets.
func assertNoSecrets(t testing.TB, logs string, secrets ...string) {
	t.Helper()
	for _, s := range append([]string{"PRIVATE KEY", "BEGIN"}, secrets...) {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
	}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

var errNotYet = errors.New("not yet")
