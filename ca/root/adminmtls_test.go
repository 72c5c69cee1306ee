package root

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

const opsAdmin = "spiffe://east.example/ns/ops/sa/admin"

// serveAdminMTLS runs ServeAdminMTLS for the admin opsAdmin on a loopback
// port until the test ends, wired as `meshca root serve` wires it.
func (h *harness) serveAdminMTLS() string {
	h.t.Helper()
	get, err := h.root.ServingCertificate()
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := adminapi.NewMTLS(adminapi.MTLSConfig{
		GetCertificate: get, Roots: h.root.OwnAuthorities, Admins: []spiffeid.ID{spiffeid.RequireFromString(opsAdmin)},
		Revocations: h.root, CRLs: h.root.RootCRLs, Now: h.clock.Now, Logger: h.cfg.Logger,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	lis := testkit.Listen(h.t)
	root := h.root
	testkit.Go(h.t, "ServeAdminMTLS", func(ctx context.Context) error { return root.serveAdminMTLS(ctx, lis, m) })
	return lis.Addr().String()
}

// mtlsAdminClient dials the admin API over mutual TLS presenting chain
// (leaf first) with key.
func (h *harness) mtlsAdminClient(addr string, key any, chain ...*x509.Certificate) meshcav1.AdminServiceClient {
	h.t.Helper()
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cfg := &tls.Config{RootCAs: h.rootsPool(), ServerName: "localhost", Time: h.clock.Now, MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{cert}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return meshcav1.NewAdminServiceClient(conn)
}

// TestAdminMTLSRefusesWorkloadCertificates: an issuer (or a pod it
// serves) holds a certificate for the admin's SPIFFE ID under its cluster
// intermediate; with it the root's admin API over mutual TLS refuses to
// register a cluster.
func TestAdminMTLSRefusesWorkloadCertificates(t *testing.T) {
	h := newHarness(t, nil)
	east, err := enroll(t, h.dial(h.serve(), nil), h.addCluster("east", "east.example"))
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	leaf, err := east.authority(t).SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), URIs: []*url.URL{spiffeid.RequireFromString(opsAdmin).URL()}, TTL: time.Hour, Now: h.clock.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	client := h.mtlsAdminClient(h.serveAdminMTLS(), key, leaf, east.inter)
	_, err = client.AddCluster(context.Background(), &meshcav1.AddClusterRequest{Name: "west", TrustDomain: "west.example"})
	if err == nil {
		t.Fatal("a workload certificate for the admin's SPIFFE ID registered a cluster")
	}
	if c := status.Code(err); c != codes.Unavailable && c != codes.PermissionDenied {
		t.Fatalf("AddCluster with a workload certificate: %v; want a failed handshake or PermissionDenied", err)
	}
	if _, err := h.db.Cluster(context.Background(), "west"); err == nil {
		t.Fatal("cluster west was registered")
	}
	if !strings.Contains(h.logs.String(), "not signed directly by a trusted root") {
		t.Fatalf("no reason logged for the refusal:\n%s", h.logs.String())
	}
}

// TestAdminCredentialRevoked: an admin credential issued on the Unix
// socket opens the admin API over mutual TLS; once revoked by serial, the
// next call on the open connection and every new handshake are refused,
// and the root CRLs list it.
func TestAdminCredentialRevoked(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TrustDomains = []string{"east.example"} })
	sock := h.adminClient()
	key := newKey(t)
	resp, err := sock.IssueAdminCredential(context.Background(), &meshcav1.IssueAdminCredentialRequest{
		SpiffeId: opsAdmin, Csr: csrFor(t, key),
	})
	if err != nil {
		t.Fatalf("IssueAdminCredential: %v", err)
	}
	cert := mustParse(t, resp.GetCertificate())
	if !signedBy(cert, h.activeRoot(), h.clock.Now()) || cert.IsCA || len(cert.ExtKeyUsage) != 1 ||
		cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.NotAfter.Sub(cert.NotBefore) > adminapi.DefaultCredentialTTL+time.Hour {
		t.Fatalf("admin certificate: CA %v, usages %v, valid %v to %v", cert.IsCA, cert.ExtKeyUsage, cert.NotBefore, cert.NotAfter)
	}
	if evs := h.events("admin_credential.issue"); len(evs) != 1 || evs[0].Serial != resp.GetSerial() ||
		!strings.HasPrefix(evs[0].Actor, "admin:") {
		t.Fatalf("audit events %+v", evs)
	}
	addr := h.serveAdminMTLS()
	client := h.mtlsAdminClient(addr, key, cert)
	if _, err := client.ListRoots(context.Background(), &meshcav1.ListRootsRequest{}); err != nil {
		t.Fatalf("admin call with the admin credential: %v", err)
	}
	// An admin over mutual TLS cannot mint its own successor.
	_, err = client.IssueAdminCredential(context.Background(), &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin, Csr: csrFor(t, key)})
	wantCode(t, err, codes.PermissionDenied)

	if _, err := sock.Revoke(context.Background(), &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_Serial{Serial: resp.GetSerial()}, Reason: "laptop lost",
	}); err != nil {
		t.Fatalf("Revoke serial: %v", err)
	}
	_, err = client.ListRoots(context.Background(), &meshcav1.ListRootsRequest{})
	wantCode(t, err, codes.PermissionDenied)
	_, err = h.mtlsAdminClient(addr, key, cert).AddCluster(context.Background(),
		&meshcav1.AddClusterRequest{Name: "west", TrustDomain: "west.example"})
	wantCode(t, err, codes.Unavailable) // the handshake failed
	if _, err := h.db.Cluster(context.Background(), "west"); err == nil {
		t.Fatal("a revoked admin registered a cluster")
	}
	b, _ := h.root.Current()
	found := false
	for _, serials := range rootCRLSerials(t, b, "east.example", h.clock.Now()) {
		for _, s := range serials {
			found = found || s == resp.GetSerial()
		}
	}
	if !found {
		t.Fatal("the root CRLs do not list the revoked admin certificate")
	}
	rs, _ := h.db.Revocations(context.Background(), h.clock.Now())
	if len(rs) != 1 || rs[0].Kind != store.RevokeSerial || !rs[0].ExpiresAt.Equal(cert.NotAfter) {
		t.Fatalf("revocations %+v; want the serial until the certificate expires (%v)", rs, cert.NotAfter)
	}
}

// TestAdminCredentialRefusals: malformed requests change nothing.
func TestAdminCredentialRefusals(t *testing.T) {
	h := newHarness(t, nil)
	sock := h.adminClient()
	key := newKey(t)
	csr := csrFor(t, key)
	badSig := append([]byte(nil), csr...)
	badSig[len(badSig)-3] ^= 0xff
	for _, tc := range []struct {
		name string
		req  *meshcav1.IssueAdminCredentialRequest
	}{
		{"no SPIFFE ID", &meshcav1.IssueAdminCredentialRequest{Csr: csr}},
		{"trust domain only", &meshcav1.IssueAdminCredentialRequest{SpiffeId: "spiffe://east.example", Csr: csr}},
		{"issuer credential ID", &meshcav1.IssueAdminCredentialRequest{SpiffeId: "spiffe://east.example/meshca/cluster/east", Csr: csr}},
		{"no CSR", &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin}},
		{"bad CSR signature", &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin, Csr: badSig}},
		{"ttl too long", &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin, Csr: csr, TtlSeconds: int64(adminapi.MaxCredentialTTL/time.Second) + 1}},
		{"negative ttl", &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin, Csr: csr, TtlSeconds: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sock.IssueAdminCredential(context.Background(), tc.req)
			wantCode(t, err, codes.InvalidArgument)
		})
	}
	if evs := h.events("admin_credential.issue"); len(evs) != 0 {
		t.Fatalf("refused requests were recorded: %+v", evs)
	}
	resp, err := sock.IssueAdminCredential(context.Background(), &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin, Csr: csr, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	if c := mustParse(t, resp.GetCertificate()); c.NotAfter.After(h.clock.Now().Add(11 * time.Minute)) {
		t.Fatalf("ttl 600s gave a certificate valid until %v", c.NotAfter)
	}
}

// TestAdminDenyListFailsClosed: while the store cannot be read, the
// deny-list grows old and admin certificates are refused.
func TestAdminDenyListFailsClosed(t *testing.T) {
	var down atomic.Bool
	h := newHarness(t, func(c *Config) { c.Store = downRevocations{c.Store.(*sqlite.Store), &down} })
	id := spiffeid.RequireFromString(opsAdmin)
	if err := h.root.CheckRevoked("1a", id); err != nil {
		t.Fatalf("fresh deny-list: %v", err)
	}
	down.Store(true)
	h.clock.Advance(h.root.maxRevocationAge() + time.Second)
	if err := h.root.refresh(context.Background()); err == nil {
		t.Fatal("refresh with the store down succeeded")
	}
	if err := h.root.CheckRevoked("1a", id); err == nil {
		t.Fatal("an old deny-list let an admin in")
	}
	down.Store(false)
	h.refresh()
	if err := h.root.CheckRevoked("1a", id); err != nil {
		t.Fatalf("deny-list read again: %v", err)
	}
}

// TestAddClusterSharedTrustDomain: a second cluster in a trust domain
// another cluster holds is refused unless asked for explicitly, and the
// sharing is audited.
func TestAddClusterSharedTrustDomain(t *testing.T) {
	h := newHarness(t, nil)
	sock := h.adminClient()
	ctx := context.Background()
	if _, err := sock.AddCluster(ctx, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example"}); err != nil {
		t.Fatal(err)
	}
	_, err := sock.AddCluster(ctx, &meshcav1.AddClusterRequest{Name: "east2", TrustDomain: "east.example"})
	wantCode(t, err, codes.FailedPrecondition)
	if _, err := h.db.Cluster(ctx, "east2"); err == nil {
		t.Fatal("a second cluster was registered in east.example")
	}
	// The same cluster again (a new join token) is not sharing.
	if _, err := sock.AddCluster(ctx, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example"}); err != nil {
		t.Fatalf("a new token for east: %v", err)
	}
	if _, err := sock.AddCluster(ctx, &meshcav1.AddClusterRequest{Name: "east2", TrustDomain: "east.example", ShareTrustDomain: true}); err != nil {
		t.Fatalf("explicit sharing: %v", err)
	}
	evs := h.events("cluster.add")
	if len(evs) != 3 || !strings.Contains(evs[2].Detail, "shared with cluster east") {
		t.Fatalf("audit events %+v; want the sharing recorded", evs)
	}
}

// TestAddClusterSharedTrustDomainWithoutLister: a store without the
// cluster list still sees the enrolled clusters of the trust domain.
func TestAddClusterSharedTrustDomainWithoutLister(t *testing.T) {
	h := newHarness(t, nil)
	if _, err := enroll(t, h.dial(h.serve(), nil), h.addCluster("east", "east.example")); err != nil {
		t.Fatal(err)
	}
	_, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{Name: "east2", TrustDomain: "east.example"}, "admin:test")
	if err == nil || !strings.Contains(err.Error(), "held by cluster east") {
		t.Fatalf("AddCluster in an enrolled cluster's trust domain: %v", err)
	}
}
