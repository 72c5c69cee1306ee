package root

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// harness is a root service on a fake clock, with file keys and an
// embedded SQLite store in temporary directories. mod may wrap the store
// (cfg.Store) to add a capability or inject a fault; db stays the real one.
type harness struct {
	t     testing.TB
	clock *testkit.Clock
	db    *sqlite.Store
	cfg   Config
	logs  *testkit.LogBuffer
	root  *Root
}

// newFakeClock is a settable clock at the current second.
func newFakeClock() *testkit.Clock { return testkit.NewClock(time.Now().Truncate(time.Second)) }

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(), logs: &testkit.LogBuffer{}}
	h.db = openSQLite(t, h.clock.Now)
	h.cfg = Config{
		Store:            h.db,
		Keys:             FileKeys{Dir: t.TempDir()},
		Hosts:            []string{"localhost", "127.0.0.1"},
		IntermediateTTL:  2 * time.Hour,
		CredentialTTL:    24 * time.Hour,
		PropagationDelay: 10 * time.Minute,
		Tick:             100 * time.Millisecond,
		Logger:           slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:              h.clock.Now,
	}
	if mod != nil {
		mod(&h.cfg)
	}
	h.root = h.start()
	return h
}

// start builds a Root on the harness's configuration (store, keys, clock).
func (h *harness) start() *Root {
	h.t.Helper()
	r, err := New(context.Background(), h.cfg)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.t.Cleanup(func() { _ = r.Close() })
	return r
}

// replica is another Root on the harness's store, keys and clock: a
// second replica of the same root service.
func (h *harness) replica() *harness {
	h.t.Helper()
	return &harness{t: h.t, clock: h.clock, db: h.db, cfg: h.cfg, logs: h.logs, root: h.start()}
}

func (h *harness) refresh() {
	h.t.Helper()
	if err := h.root.refresh(context.Background()); err != nil {
		h.t.Fatalf("refresh: %v", err)
	}
}

func (h *harness) addCluster(name, td string) string {
	h.t.Helper()
	resp, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{Name: name, TrustDomain: td}, "admin:test")
	if err != nil {
		h.t.Fatalf("add cluster %s: %v", name, err)
	}
	return resp.GetJoinToken()
}

// serve runs Serve on a loopback port until the test ends.
func (h *harness) serve() string {
	h.t.Helper()
	lis := testkit.Listen(h.t)
	testkit.Go(h.t, "Serve", func(ctx context.Context) error { return h.root.Serve(ctx, lis) })
	return lis.Addr().String()
}

// rootsPool holds every recorded root.
func (h *harness) rootsPool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, s := range h.root.Roots() {
		pool.AddCert(s.Cert)
	}
	return pool
}

// dial connects to addr over TLS, trusting every recorded root, and
// presenting cert when it is not nil.
func (h *harness) dial(addr string, cert *tls.Certificate) *grpc.ClientConn {
	h.t.Helper()
	return h.dialPool(addr, h.rootsPool(), cert)
}

// dialPool connects to addr trusting pool, presenting cert when not nil.
func (h *harness) dialPool(addr string, pool *x509.CertPool, cert *tls.Certificate) *grpc.ClientConn {
	h.t.Helper()
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", Time: h.clock.Now, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// activeRoot is the certificate of the active root.
func (h *harness) activeRoot() *x509.Certificate {
	h.t.Helper()
	st := h.root.state.Load()
	if st.active == nil {
		h.t.Fatal("no active root")
	}
	return st.active.Certificate
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrFor is a DER CSR with a subject the root must ignore; as an
// intermediate CSR, its DNS name is the serving name the issuer asks for.
func csrFor(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "ignored"}, DNSNames: []string{"ignored.example"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// issuerSide is what an issuer keeps after Enroll or Renew.
type issuerSide struct {
	credKey, interKey crypto.Signer
	cred, inter       *x509.Certificate
	bundle            *trust.TrustBundle
}

func (s *issuerSide) tlsCert() *tls.Certificate {
	return &tls.Certificate{Certificate: [][]byte{s.cred.Raw}, PrivateKey: s.credKey, Leaf: s.cred}
}

func (s *issuerSide) authority(t testing.TB) *ca.Authority {
	t.Helper()
	a, err := ca.NewAuthority(s.inter, s.interKey)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// rootClient is a RootService client of the root at addr that presents
// s's credential.
func (h *harness) rootClient(addr string, s *issuerSide) meshcav1.RootServiceClient {
	h.t.Helper()
	return meshcav1.NewRootServiceClient(h.dial(addr, s.tlsCert()))
}

// mustEnroll registers cluster with trust domain td and enrols it over
// the root service at addr.
func (h *harness) mustEnroll(addr, cluster, td string) *issuerSide {
	h.t.Helper()
	s, err := enroll(h.t, h.dial(addr, nil), h.addCluster(cluster, td))
	if err != nil {
		h.t.Fatalf("enrol %s: %v", cluster, err)
	}
	return s
}

func enroll(t testing.TB, conn *grpc.ClientConn, token string) (*issuerSide, error) {
	t.Helper()
	s := &issuerSide{credKey: newKey(t), interKey: newKey(t)}
	resp, err := meshcav1.NewRootServiceClient(conn).Enroll(context.Background(), &meshcav1.EnrollRequest{
		JoinToken: token, CredentialCsr: csrFor(t, s.credKey), IntermediateCsr: csrFor(t, s.interKey),
	})
	if err != nil {
		return nil, err
	}
	if len(resp.GetCredentialChain()) != 1 || len(resp.GetIntermediateChain()) != 1 {
		t.Fatalf("chains: %d credential, %d intermediate certificates; want 1 and 1 (no root)",
			len(resp.GetCredentialChain()), len(resp.GetIntermediateChain()))
	}
	s.cred = mustParse(t, resp.GetCredentialChain()[0])
	s.inter = mustParse(t, resp.GetIntermediateChain()[0])
	if s.bundle, err = trust.TrustBundleFromProto(resp.GetBundle()); err != nil {
		t.Fatalf("bundle: %v", err)
	}
	return s, nil
}

// renew asks for a new intermediate and a new credential, authenticated by
// s's credential. The result holds the new credential when newCred;
// otherwise it keeps s's, as an issuer does that lost the new one (the root
// accepts the replaced credential until its successor is used).
func renew(t testing.TB, conn *grpc.ClientConn, s *issuerSide, newCred bool) (*issuerSide, error) {
	t.Helper()
	out := &issuerSide{credKey: s.credKey, cred: s.cred, interKey: newKey(t)}
	credKey := newKey(t)
	req := &meshcav1.RenewRequest{IntermediateCsr: csrFor(t, out.interKey), CredentialCsr: csrFor(t, credKey)}
	resp, err := meshcav1.NewRootServiceClient(conn).Renew(context.Background(), req)
	if err != nil {
		return nil, err
	}
	out.inter = mustParse(t, resp.GetIntermediateChain()[0])
	if len(resp.GetCredentialChain()) != 1 {
		t.Fatalf("renew: %d credential certificates, want 1", len(resp.GetCredentialChain()))
	}
	if newCred {
		out.credKey, out.cred = credKey, mustParse(t, resp.GetCredentialChain()[0])
	}
	if out.bundle, err = trust.TrustBundleFromProto(resp.GetBundle()); err != nil {
		t.Fatalf("bundle: %v", err)
	}
	return out, nil
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signedBy reports whether c verifies against root alone.
func signedBy(c, root *x509.Certificate, now time.Time) bool {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	_, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

func wantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("error %v: code %v, want %v", err, status.Code(err), want)
	}
}

func countLines(s, substr string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// fakeFederated is a Federated source whose domains the test sets.
type fakeFederated struct {
	mu      sync.Mutex
	domains []trust.DomainBundle
	changed chan struct{}
}

var _ Federated = (*fakeFederated)(nil)

func newFakeFederated() *fakeFederated { return &fakeFederated{changed: make(chan struct{})} }

func (f *fakeFederated) Domains() []trust.DomainBundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.domains)
}

func (f *fakeFederated) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeFederated) set(d ...trust.DomainBundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.domains = d
	close(f.changed)
	f.changed = make(chan struct{})
}
