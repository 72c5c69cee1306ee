package issuer_test

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

var devHosts = []string{"127.0.0.1", "::1", "localhost", "istiod.istio-system.svc"}

// wire is an issuer served over real TLS gRPC on loopback, with the real
// JWKS attestor and the real SQLite store.
type wire struct {
	tree   *testkit.Tree
	signer *attest.DevSigner
	db     *sqlite.Store
	client pb.IstioCertificateServiceClient
	conn   *grpc.ClientConn
	// addr is the server's address on loopback.
	addr string
	// dial opens another client connection to the server, closed when the
	// test ends.
	dial func(t testing.TB) *grpc.ClientConn
	// attestor is what the server uses (JWKS, optionally cached).
	attestor issuer.Attestor
	// denyList is the issuer's, nil without wireOptions.deny.
	denyList issuer.DenyChecker
	// jwt mints JWT-SVIDs and bundles serves the bundle; jwt is nil
	// without wireOptions.jwt.
	jwt     meshcav1.JWTSVIDServiceClient
	bundles meshcav1.BundleServiceClient
	// iss and keys are the server's issuer and JWT keys (keys nil
	// without wireOptions.jwt).
	iss  *issuer.Issuer
	keys *issuer.JWTKeys
	// reg holds the issuer's metrics.
	reg *prometheus.Registry
}

func newWire(t *testing.T) *wire {
	t.Helper()
	return newWireWith(t, false)
}

// newWireWith builds a wire; cached puts the production attestation cache in
// front of the JWKS attestor.
func newWireWith(t testing.TB, cached bool) *wire {
	return newWireRecorder(t, cached, nil)
}

// newWireRecorder builds a wire whose issuer records into rec instead of the
// SQLite store when rec is not nil.
func newWireRecorder(t testing.TB, cached bool, rec issuer.Recorder) *wire {
	t.Helper()
	return newWireOptions(t, wireOptions{cached: cached, rec: rec})
}

// wireOptions tune newWireOptions; the zero value is newWire's wire.
type wireOptions struct {
	// cached puts the production attestation cache in front of the JWKS
	// attestor.
	cached bool
	// rec, when set, records instead of the SQLite store.
	rec issuer.Recorder
	// now is the issuer's clock; nil means time.Now.
	now func() time.Time
	// deny, when set, is the issuer's deny-list, built over the wire's
	// store; the wire keeps it in denyList.
	deny func(db *sqlite.Store) issuer.DenyChecker
	// jwt, when set, serves JWT-SVIDs configured so (its Issuer is set
	// by the wire).
	jwt *issuer.JWTConfig
	// logger, when set, receives the issuer's logs.
	logger *slog.Logger
	// wrap, when set, wraps the issuer's attestor and recorder (to time
	// them, say).
	wrap func(issuer.Attestor, issuer.Recorder) (issuer.Attestor, issuer.Recorder)
}

func newWireOptions(t testing.TB, opts wireOptions) *wire {
	t.Helper()
	dir := t.TempDir()
	w := &wire{tree: testkit.New(t, testkit.Options{})}
	var err error
	if w.signer, err = attest.LoadOrCreateDevSigner(dir); err != nil {
		t.Fatal(err)
	}
	jwks, err := attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: w.signer.KeySet()}, Cluster: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if w.db, err = sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "meshca.db")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.db.Close() })
	var att issuer.Attestor = jwks
	if opts.cached {
		att = attest.NewCached(jwks, attest.CacheConfig{})
	}
	w.attestor = att
	if opts.deny != nil {
		w.denyList = opts.deny(w.db)
	}
	w.reg = prometheus.NewRegistry()
	rec := cmp.Or[issuer.Recorder](opts.rec, w.db)
	if opts.wrap != nil {
		att, rec = opts.wrap(att, rec)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: w.tree.TrustDomain, Cluster: "dev", Authority: w.tree.Intermediate, Bundle: w.tree.Bundle,
		Attestor: att, Recorder: rec, DenyList: w.denyList, Now: opts.now,
		Logger: cmp.Or(opts.logger, slog.New(slog.NewJSONHandler(io.Discard, nil))),
		// Metrics on, as in production with a metrics listener: the
		// benchmarks over this wire measure their cost too.
		Metrics: w.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys *issuer.JWTKeys
	if opts.jwt != nil {
		jc := *opts.jwt
		jc.Issuer = iss
		if keys, err = issuer.NewJWTKeys(jc); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: iss, Hosts: devHosts, JWT: keys})
	if err != nil {
		t.Fatal(err)
	}
	addr := testkit.Serve(t, "Serve", srv.Serve)
	w.addr = addr
	creds := credentials.NewTLS(&tls.Config{RootCAs: w.tree.Bundle.Pool(), ServerName: "istiod.istio-system.svc"})
	w.dial = func(t testing.TB) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	w.conn = w.dial(t)
	w.client = pb.NewIstioCertificateServiceClient(w.conn)
	w.bundles = meshcav1.NewBundleServiceClient(w.conn)
	w.iss, w.keys = iss, keys
	if keys != nil {
		w.jwt = meshcav1.NewJWTSVIDServiceClient(w.conn)
	}
	return w
}

func (w *wire) token(t testing.TB, spec attest.TokenSpec) string {
	t.Helper()
	if spec.Namespace == "" {
		spec.Namespace, spec.ServiceAccount = "default", "web"
	}
	tok, err := w.signer.Mint(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (w *wire) call(t *testing.T, md metadata.MD, csr []byte, ttl int64) (*pb.IstioCertificateResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 10*time.Second)
	defer cancel()
	return w.client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csr), ValidityDuration: ttl})
}

func (w *wire) rows(t testing.TB) int {
	t.Helper()
	certs, err := w.db.Certificates(context.Background(), store.CertificateFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(certs)
}

func bearer(tok string) metadata.MD { return metadata.Pairs("authorization", "Bearer "+tok) }

func TestGRPCCreateCertificate(t *testing.T) {
	w := newWire(t)
	resp, err := w.call(t, bearer(w.token(t, attest.TokenSpec{Audiences: []string{"istio-ca"}})), csrPEM(t, testKey(t, "p256"), nil), 600)
	if err != nil {
		t.Fatal(err)
	}
	chain := resp.GetCertChain()
	if len(chain) != 3 {
		t.Fatalf("cert_chain has %d entries, want leaf, intermediate, root", len(chain))
	}
	for i, p := range chain {
		if strings.Count(p, "BEGIN CERTIFICATE") != 1 {
			t.Errorf("cert_chain[%d] is not exactly one PEM certificate", i)
		}
	}
	if !strings.Contains(chain[2], string(w.tree.Bundle.PEM())) {
		t.Error("last entry is not the root")
	}
	leaf := parsePEMCert(t, chain[0])
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 10*time.Minute || got > 11*time.Minute {
		t.Errorf("validity %v, want 10m (requested 600 s) plus backdating", got)
	}
	if w.rows(t) != 1 {
		t.Errorf("store has %d rows, want 1", w.rows(t))
	}
	if err := w.db.VerifyAuditChain(context.Background()); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

func TestGRPCServingCertificate(t *testing.T) {
	w := newWire(t)
	addr := w.conn.Target()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: w.tree.Bundle.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cert := conn.ConnectionState().PeerCertificates[0]
	if !slices.Equal(cert.DNSNames, []string{"localhost", "istiod.istio-system.svc"}) || len(cert.IPAddresses) != 2 {
		t.Errorf("serving certificate names DNS=%v IP=%v", cert.DNSNames, cert.IPAddresses)
	}
	for _, name := range devHosts {
		if err := cert.VerifyHostname(name); err != nil {
			t.Errorf("serving certificate does not cover %s: %v", name, err)
		}
	}
}

func TestGRPCErrorCodes(t *testing.T) {
	w := newWire(t)
	other, err := attest.LoadOrCreateDevSigner(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p256CSR := csrPEM(t, testKey(t, "p256"), nil)
	good := w.token(t, attest.TokenSpec{})
	past := time.Now().Add(-3 * time.Hour)
	foreign, err := other.Mint(attest.TokenSpec{Namespace: "default", ServiceAccount: "web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		md   metadata.MD
		csr  []byte
		code codes.Code
		msg  string // the exact message for opaque codes, a substring otherwise
	}{
		{"wrong audience", bearer(w.token(t, attest.TokenSpec{Audiences: []string{"vault"}})), p256CSR, codes.Unauthenticated, "authentication failed"},
		{"expired token", bearer(w.token(t, attest.TokenSpec{Now: past, TTL: time.Hour})), p256CSR, codes.Unauthenticated, "authentication failed"},
		{"not yet valid token", bearer(w.token(t, attest.TokenSpec{Now: time.Now().Add(time.Hour)})), p256CSR, codes.Unauthenticated, "authentication failed"},
		{"wrong signer", bearer(foreign), p256CSR, codes.Unauthenticated, "authentication failed"},
		{"alg none", bearer(algNone(t, good)), p256CSR, codes.Unauthenticated, "authentication failed"},
		{"no authorization", metadata.MD{}, p256CSR, codes.Unauthenticated, "authentication failed"},
		{"basic auth", metadata.Pairs("authorization", "Basic "+good), p256CSR, codes.Unauthenticated, "authentication failed"},
		{"unknown cluster", metadata.Pairs("authorization", "Bearer "+good, "clusterid", "west"), p256CSR, codes.Unauthenticated, "authentication failed"},
		{"forged URI SAN", bearer(good), csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/kube-system/sa/admin")}}), codes.PermissionDenied, "caller attested as spiffe://cluster.local/ns/default/sa/web"},
		{"DNS SAN", bearer(good), csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{DNSNames: []string{"evil.example"}}), codes.PermissionDenied, "may not have DNS names"},
		{"RSA-1024", bearer(good), csrPEM(t, testKey(t, "rsa1024"), nil), codes.InvalidArgument, "1024 bits"},
		{"garbage PEM", bearer(good), []byte("garbage"), codes.InvalidArgument, "not PEM"},
		{"oversized CSR", bearer(good), []byte(strings.Repeat("A", 20<<10)), codes.InvalidArgument, "the limit is 16384"},
		{"oversized request", bearer(good), []byte(strings.Repeat("A", 100<<10)), codes.ResourceExhausted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := w.call(t, tc.md, tc.csr, 0)
			wantRefused(t, err, tc.code, tc.msg)
			if resp != nil {
				t.Error("response carried a certificate")
			}
			if n := w.rows(t); n != 0 {
				t.Errorf("rejected request left %d certificate rows", n)
			}
		})
	}
}

func TestGRPCStoreDownIsUnavailable(t *testing.T) {
	w := newWire(t)
	if err := w.db.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := w.call(t, bearer(w.token(t, attest.TokenSpec{})), csrPEM(t, testKey(t, "p256"), nil), 0)
	if st := status.Convert(err); st.Code() != codes.Unavailable || resp != nil {
		t.Fatalf("code %v resp %v, want Unavailable and no certificate", st.Code(), resp)
	}
}

// algNone rewrites a signed token into an unsigned one with the same claims.
func algNone(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
}

func parsePEMCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		t.Fatal("not PEM")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
