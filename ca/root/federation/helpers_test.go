package federation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// fakeSource is a BundleSource the test publishes to, like the root
// server's publisher.
type fakeSource struct {
	mu      sync.Mutex
	tb      *trust.TrustBundle
	changed chan struct{}
}

var _ BundleSource = (*fakeSource)(nil)

func (s *fakeSource) Current() (*trust.TrustBundle, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.tb, s.changed
}

func (s *fakeSource) set(tb *trust.TrustBundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
	}
	s.tb, s.changed = tb, make(chan struct{})
}

// mesh is one meshca deployment in miniature: a trust domain, its roots
// (oldest first) and the bundle source of its root server.
type mesh struct {
	td    spiffeid.TrustDomain
	roots []*ca.Authority
	src   *fakeSource
	seq   uint64
	// endpointID is the SPIFFE ID of the mesh's https_spiffe endpoint.
	endpointID spiffeid.ID
}

func newKey(tb testing.TB) crypto.Signer {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func newRoot(tb testing.TB, name string) *ca.Authority {
	tb.Helper()
	root, err := ca.NewRoot(ca.RootConfig{Signer: newKey(tb), CommonName: name, TTL: 24 * time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// newMesh returns mesh <name>.example with one root, published at
// sequence 1.
func newMesh(tb testing.TB, name string) *mesh {
	tb.Helper()
	td := spiffeid.RequireTrustDomainFromString(name + ".example")
	m := &mesh{td: td, src: &fakeSource{}, endpointID: spiffeid.RequireFromPath(td, "/meshca/federation")}
	m.roots = append(m.roots, newRoot(tb, name+" root 1"))
	m.publish(tb, m.rootCerts()...)
	return m
}

func (m *mesh) rootCerts() []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range m.roots {
		out = append(out, r.Certificate)
	}
	return out
}

// publish makes the mesh's root server publish roots at the next sequence.
func (m *mesh) publish(tb testing.TB, roots ...*x509.Certificate) {
	tb.Helper()
	m.seq++
	m.publishAt(tb, m.seq, roots...)
}

func (m *mesh) publishAt(tb testing.TB, seq uint64, roots ...*x509.Certificate) {
	tb.Helper()
	b, err := trust.NewBundle(roots...)
	if err != nil {
		tb.Fatal(err)
	}
	m.src.set(&trust.TrustBundle{Sequence: seq, Domains: []trust.DomainBundle{{TrustDomain: m.td, Roots: b}}})
}

// rotate adds a root and publishes both: the prepare step of a root
// rotation.
func (m *mesh) rotate(tb testing.TB) *ca.Authority {
	tb.Helper()
	r := newRoot(tb, m.td.Name()+" root "+string(rune('0'+len(m.roots)+1)))
	m.roots = append(m.roots, r)
	m.publish(tb, m.rootCerts()...)
	return r
}

// initialBundle is the mesh's bundle as another mesh gets it out of band.
func (m *mesh) initialBundle() *spiffebundle.Bundle {
	return spiffebundle.FromX509Authorities(m.td, m.rootCerts())
}

// leafSVID signs an X509-SVID for id directly under root.
func leafSVID(tb testing.TB, root *ca.Authority, id spiffeid.ID) *x509svid.SVID {
	tb.Helper()
	key := newKey(tb)
	leaf, err := root.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{id.URL()}, TTL: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// workloadSVID signs an X509-SVID for id the way a cluster does: under a
// name-constrained intermediate of root.
func workloadSVID(tb testing.TB, root *ca.Authority, id spiffeid.ID) *x509svid.SVID {
	tb.Helper()
	ikey := newKey(tb)
	icert, err := root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: ikey.Public(), TrustDomain: id.TrustDomain(), Cluster: "east", TTL: 2 * time.Hour,
	})
	if err != nil {
		tb.Fatal(err)
	}
	inter, err := ca.NewAuthority(icert, ikey)
	if err != nil {
		tb.Fatal(err)
	}
	svid := leafSVID(tb, inter, id)
	svid.Certificates = append(svid.Certificates, icert)
	return svid
}

func tlsCertificate(s *x509svid.SVID) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, x := range s.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// certBox holds the certificate an endpoint presents; tests swap it.
type certBox struct {
	p atomic.Pointer[tls.Certificate]
}

func (b *certBox) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return b.p.Load(), nil }

// webPKI is a test Web PKI: a CA and server certificates for 127.0.0.1.
type webPKI struct {
	ca   *ca.Authority
	pool *x509.CertPool
}

func newWebPKI(tb testing.TB) *webPKI {
	tb.Helper()
	root := newRoot(tb, "test web CA")
	pool := x509.NewCertPool()
	pool.AddCert(root.Certificate)
	return &webPKI{ca: root, pool: pool}
}

// serverCert signs a fresh server certificate for 127.0.0.1 and localhost.
func (w *webPKI) serverCert(tb testing.TB) (*x509.Certificate, crypto.Signer) {
	tb.Helper()
	key := newKey(tb)
	cert, err := w.ca.SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		TTL: time.Hour, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return cert, key
}

// writeServerCert writes a fresh server certificate pair to the files, each
// by rename as a careful deployer does, and returns the certificate.
func (w *webPKI) writeServerCert(tb testing.TB, certFile, keyFile string) *x509.Certificate {
	tb.Helper()
	cert, key := w.serverCert(tb)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	writeFileAtomic(tb, certFile, trust.EncodeCertificates(cert))
	writeFileAtomic(tb, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return cert
}

func writeFileAtomic(tb testing.TB, path string, data []byte) {
	tb.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// running is an endpoint serving on 127.0.0.1.
type running struct {
	url  string
	addr string
	stop func()
}

// serve runs e on addr ("127.0.0.1:0" for any port) until stop or the end
// of the test, and checks that Serve shut down cleanly.
func serve(tb testing.TB, e *Endpoint, addr string) *running {
	tb.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, lis) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				tb.Error("Serve did not return after its context was cancelled")
			}
		})
	}
	tb.Cleanup(stop)
	a := lis.Addr().String()
	return &running{url: "https://" + a + "/", addr: a, stop: stop}
}

// spiffeEndpoint starts m's https_spiffe endpoint presenting the SVID in box
// (filled with an SVID under m's first root if empty).
func spiffeEndpoint(tb testing.TB, m *mesh, box *certBox, log *slog.Logger) *running {
	tb.Helper()
	if box.p.Load() == nil {
		box.p.Store(tlsCertificate(leafSVID(tb, m.roots[0], m.endpointID)))
	}
	e, err := NewEndpoint(EndpointConfig{
		TrustDomain: m.td, Source: m.src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: m.endpointID,
		GetCertificate: box.get, Logger: log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return serve(tb, e, "127.0.0.1:0")
}

// webEndpoint starts m's https_web endpoint with a certificate from w.
func webEndpoint(tb testing.TB, m *mesh, w *webPKI, log *slog.Logger) *running {
	tb.Helper()
	dir := tb.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	w.writeServerCert(tb, certFile, keyFile)
	e, err := NewEndpoint(EndpointConfig{
		TrustDomain: m.td, Source: m.src, Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile, Logger: log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return serve(tb, e, "127.0.0.1:0")
}

// logBuffer collects log lines for assertions and lets a test wait for a
// line to appear.
type logBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{} // closed and replaced on every write
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wrote != nil {
		close(l.wrote)
		l.wrote = nil
	}
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) count(s string) int { return strings.Count(l.String(), s) }

// waitFor waits until s has been logged n times.
func (l *logBuffer) waitFor(tb testing.TB, s string, n int) {
	tb.Helper()
	deadline := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		if strings.Count(l.buf.String(), s) >= n {
			l.mu.Unlock()
			return
		}
		if l.wrote == nil {
			l.wrote = make(chan struct{})
		}
		wrote := l.wrote
		l.mu.Unlock()
		select {
		case <-wrote:
		case <-deadline:
			tb.Fatalf("timed out waiting for %d log lines with %q:\n%s", n, s, l)
		}
	}
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rootsOf returns the certificates of d, or nil.
func rootsOf(d []trust.DomainBundle, td spiffeid.TrustDomain) []*x509.Certificate {
	for _, x := range d {
		if x.TrustDomain == td {
			return x.Roots.Roots()
		}
	}
	return nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
