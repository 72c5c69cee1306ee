package root

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

func TestEnrollGood(t *testing.T) {
	h := newHarness(t, nil)
	conn := h.dial(h.serve(), nil)
	token := h.addCluster("east", "east.example")
	if !strings.HasPrefix(token, JoinTokenPrefix) {
		t.Fatalf("token %q lacks the prefix", token)
	}
	if strings.Contains(h.logs.String(), token) {
		t.Fatal("the join token was logged")
	}
	iss, err := enroll(t, conn, token)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	now, root := h.clock.Now(), h.activeRoot()

	wantID := "spiffe://east.example/meshca/cluster/east"
	c := iss.cred
	if c.IsCA || len(c.URIs) != 1 || c.URIs[0].String() != wantID || len(c.DNSNames) != 0 ||
		!slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("credential: CA %v, URIs %v, DNS %v, EKU %v; want a client leaf for %s only", c.IsCA, c.URIs, c.DNSNames, c.ExtKeyUsage, wantID)
	}
	if !signedBy(c, root, now) || c.CheckSignatureFrom(root) != nil {
		t.Fatal("credential is not signed directly by the active root")
	}
	if d := c.NotAfter.Sub(now); d != h.cfg.CredentialTTL {
		t.Errorf("credential lives %v, want %v", d, h.cfg.CredentialTTL)
	}

	in := iss.inter
	if !in.IsCA || !in.MaxPathLenZero || !slices.Equal(in.PermittedURIDomains, []string{"east.example"}) ||
		!strings.Contains(in.Subject.CommonName, "east") {
		t.Fatalf("intermediate: CA %v, pathlen0 %v, URI constraints %v, CN %q", in.IsCA, in.MaxPathLenZero, in.PermittedURIDomains, in.Subject.CommonName)
	}
	if in.CheckSignatureFrom(root) != nil {
		t.Fatal("intermediate is not signed by the active root")
	}
	if d := in.NotAfter.Sub(now); d != h.cfg.IntermediateTTL {
		t.Errorf("intermediate lives %v, want %v", d, h.cfg.IntermediateTTL)
	}

	recs := h.allIntermediates()
	if len(recs) != 1 || recs[0].Serial != trust.SerialHex(in.SerialNumber) || recs[0].Cluster != "east" ||
		recs[0].TrustDomain != "east.example" || recs[0].RootFingerprint != fingerprintHex(root) {
		t.Fatalf("recorded intermediates: %+v", recs)
	}
	d, ok := iss.bundle.Domain(spiffeid.RequireTrustDomainFromString("east.example"))
	if !ok || !d.Roots.Roots()[0].Equal(root) || iss.bundle.ActiveRoot != trust.Fingerprint(root) {
		t.Fatal("the bundle returned by Enroll lacks the cluster's trust domain or the active root")
	}
	for _, action := range []string{"cluster.add", "cluster.enroll", "intermediate.issue", "credential.issue"} {
		evs := h.events(action)
		if len(evs) != 1 || evs[0].Cluster != "east" {
			t.Errorf("audit %s: %+v, want one event for cluster east", action, evs)
		}
	}
	if ev := h.events("credential.issue")[0]; ev.SPIFFEID != wantID || ev.Serial != trust.SerialHex(c.SerialNumber) {
		t.Errorf("credential audit event: %+v", ev)
	}
}

func TestEnrollTokenRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token func(h *harness, conn *grpc.ClientConn) string
	}{
		{"reused", func(h *harness, conn *grpc.ClientConn) string {
			tok := h.addCluster("east", "east.example")
			if _, err := enroll(h.t, conn, tok); err != nil {
				h.t.Fatalf("first use: %v", err)
			}
			return tok
		}},
		{"expired", func(h *harness, _ *grpc.ClientConn) string {
			resp, err := h.root.addCluster(context.Background(),
				&meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", TokenTtlSeconds: 60}, "admin:test")
			if err != nil {
				h.t.Fatal(err)
			}
			h.clock.Advance(61 * time.Second)
			return resp.GetJoinToken()
		}},
		{"garbage", func(h *harness, _ *grpc.ClientConn) string {
			h.addCluster("east", "east.example")
			return JoinTokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		}},
		{"empty", func(*harness, *grpc.ClientConn) string { return "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			conn := h.dial(h.serve(), nil)
			token := tc.token(h, conn)
			before, audits := h.intermediateCount(), h.auditCount()
			_, err := enroll(t, conn, token)
			wantCode(t, err, codes.Unauthenticated)
			if msg := status.Convert(err).Message(); msg != "authentication failed" {
				t.Errorf("message %q tells the caller more than it should", msg)
			}
			if n := h.intermediateCount(); n != before {
				t.Errorf("%d intermediates recorded, want %d", n, before)
			}
			if h.auditCount() != audits {
				t.Error("a refused enrolment wrote audit events")
			}
			if !strings.Contains(h.logs.String(), "join token") {
				t.Error("the reason was not logged")
			}
		})
	}
}

func TestEnrollBadCSR(t *testing.T) {
	h := newHarness(t, nil)
	conn := h.dial(h.serve(), nil)
	token := h.addCluster("east", "east.example")
	good := csrFor(t, newKey(t))
	tampered := slices.Clone(good)
	tampered[len(tampered)-1] ^= 0xff
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name               string
		cred, intermediate []byte
	}{
		{"no credential CSR", nil, good},
		{"no intermediate CSR", good, nil},
		{"garbage", []byte("not a CSR"), good},
		{"bad signature", good, tampered},
		{"RSA 1024", good, csrFor(t, rsaKey)},
		{"P-224", csrFor(t, p224), good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := meshcav1.NewRootServiceClient(conn).Enroll(context.Background(), &meshcav1.EnrollRequest{
				JoinToken: token, CredentialCsr: tc.cred, IntermediateCsr: tc.intermediate,
			})
			wantCode(t, err, codes.InvalidArgument)
		})
	}
	if h.intermediateCount() != 0 {
		t.Fatal("an intermediate was recorded for a bad request")
	}
	// Bad requests did not burn the token; other key types are accepted.
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := meshcav1.NewRootServiceClient(conn).Enroll(context.Background(), &meshcav1.EnrollRequest{
		JoinToken: token, CredentialCsr: csrFor(t, p384), IntermediateCsr: csrFor(t, edKey),
	})
	if err != nil {
		t.Fatalf("Enroll after bad requests: %v", err)
	}
	if in := mustParse(t, resp.GetIntermediateChain()[0]); in.PublicKeyAlgorithm != x509.Ed25519 {
		t.Fatalf("intermediate key %v, want Ed25519", in.PublicKeyAlgorithm)
	}
}

func TestEnrollFailures(t *testing.T) {
	var down atomic.Bool
	h := newHarness(t, func(c *Config) { c.Store = downRedeem{c.Store.(*sqlite.Store), &down} })
	conn := h.dial(h.serve(), nil)
	token := h.addCluster("east", "east.example")

	_, err := meshcav1.NewRootServiceClient(conn).Enroll(context.Background(), &meshcav1.EnrollRequest{
		JoinToken: strings.Repeat("x", 100<<10), CredentialCsr: csrFor(t, newKey(t)), IntermediateCsr: csrFor(t, newKey(t)),
	})
	wantCode(t, err, codes.ResourceExhausted)

	down.Store(true)
	_, err = enroll(t, conn, token)
	wantCode(t, err, codes.Unavailable)
	down.Store(false)
	if _, err := enroll(t, conn, token); err != nil {
		t.Fatalf("Enroll after the store came back: %v", err)
	}
}

func TestRenew(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	iss := h.mustEnroll(addr, "east", "east.example")
	h.addCluster("west", "west.example")
	withCred := h.dial(addr, iss.tlsCert())
	h.clock.Advance(time.Hour)

	next, err := renew(t, withCred, iss, false)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if next.inter.CheckSignatureFrom(h.activeRoot()) != nil ||
		!slices.Equal(next.inter.PermittedURIDomains, []string{"east.example"}) || !next.inter.NotBefore.After(iss.inter.NotBefore) {
		t.Fatal("renewed intermediate is not a newer one for east.example under the active root")
	}
	if n := h.intermediateCount(); n != 2 {
		t.Fatalf("%d intermediates recorded, want 2", n)
	}
	if ev := h.events("intermediate.issue"); ev[1].Actor != "spiffe://east.example/meshca/cluster/east" {
		t.Errorf("renewal audited as %q", ev[1].Actor)
	}

	withNew, err := renew(t, withCred, iss, true)
	if err != nil {
		t.Fatalf("Renew with a credential CSR: %v", err)
	}
	if withNew.cred.URIs[0].String() != iss.cred.URIs[0].String() || withNew.cred.Equal(iss.cred) {
		t.Fatal("the new credential is not a new certificate for the same ID")
	}
	if _, err := renew(t, h.dial(addr, withNew.tlsCert()), withNew, false); err != nil {
		t.Fatalf("Renew with the new credential: %v", err)
	}

	// Credential-shaped certificates the root did not sign directly, or
	// that do not match a registered cluster.
	root := h.root.state.Load().active
	now := h.clock.Now()
	leaf := func(signer *ca.Authority, uri string) *tls.Certificate {
		key := newKey(t)
		c, err := signer.SignLeaf(ca.LeafRequest{
			PublicKey: key.Public(), URIs: []*url.URL{mustURL(t, uri)}, TTL: time.Hour, Now: now,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			t.Fatal(err)
		}
		cert := &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
		for _, up := range signer.Chain {
			cert.Certificate = append(cert.Certificate, up.Raw)
		}
		return cert
	}
	inter := iss.authority(t)
	inter.Chain = nil
	viaInter := leaf(inter, "spiffe://east.example/meshca/cluster/east")
	viaInter.Certificate = append(viaInter.Certificate, iss.inter.Raw)
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no client certificate", nil},
		{"signed by the intermediate", viaInter},
		{"wrong trust domain", leaf(root, "spiffe://west.example/meshca/cluster/east")},
		{"unregistered cluster", leaf(root, "spiffe://east.example/meshca/cluster/ghost")},
		{"not a credential path", leaf(root, "spiffe://east.example/ns/default/sa/east")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.intermediateCount()
			_, err := renew(t, h.dial(addr, tc.cert), iss, false)
			wantCode(t, err, codes.Unauthenticated)
			if h.intermediateCount() != before {
				t.Fatal("a refused renewal recorded an intermediate")
			}
		})
	}
}

func TestIntermediateNameConstraints(t *testing.T) {
	h := newHarness(t, nil)
	conn := h.dial(h.serve(), nil)
	east, err := enroll(t, conn, h.addCluster("east", "east.example"))
	if err != nil {
		t.Fatal(err)
	}
	west, err := enroll(t, conn, h.addCluster("west", "west.example"))
	if err != nil {
		t.Fatal(err)
	}
	roots := h.rootsPool()
	now := h.clock.Now()
	verify := func(iss *issuerSide, uri string) error {
		c, err := iss.authority(t).SignLeaf(ca.LeafRequest{PublicKey: newKey(t).Public(), URIs: []*url.URL{mustURL(t, uri)}, TTL: time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		inters := x509.NewCertPool()
		inters.AddCert(iss.inter)
		_, err = c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now})
		return err
	}
	for _, tc := range []struct {
		iss     *issuerSide
		uri     string
		allowed bool
	}{
		{east, "spiffe://east.example/ns/default/sa/web", true},
		{west, "spiffe://west.example/ns/default/sa/web", true},
		{east, "spiffe://west.example/ns/default/sa/web", false},
		{west, "spiffe://east.example/ns/default/sa/web", false},
		{east, "spiffe://evil.east.example/ns/default/sa/web", false},
	} {
		err := verify(tc.iss, tc.uri)
		if (err == nil) != tc.allowed {
			t.Errorf("intermediate for %s signing %s: verify error %v, want allowed=%v",
				tc.iss.inter.PermittedURIDomains, tc.uri, err, tc.allowed)
		}
	}
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestKeyUnavailable: while the active root's key cannot be loaded, signing
// fails as unavailable (the token is not burned) and the bundle is still
// served; once the key is back, the root recovers without a restart.
func TestKeyUnavailable(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TrustDomains = []string{"east.example"} })
	token := h.addCluster("east", "east.example")
	keyFile := filepath.Join(h.cfg.Keys.(FileKeys).Dir, h.root.Roots()[0].KeyRef)
	if err := os.Rename(keyFile, keyFile+".away"); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second)
	h.root = h.start() // a fresh start has no cached key
	b, _ := h.root.Current()
	if len(b.Domains) != 1 || b.ActiveRoot == ([32]byte{}) {
		t.Fatal("no bundle while the key is unavailable")
	}
	req := &meshcav1.EnrollRequest{JoinToken: token, CredentialCsr: csrFor(t, newKey(t)), IntermediateCsr: csrFor(t, newKey(t))}
	_, err := h.root.enroll(context.Background(), req)
	wantCode(t, statusOf(context.Background(), h.root.log, "Enroll", err), codes.Unavailable)
	if !strings.Contains(h.logs.String(), "cannot load the active root's key") {
		t.Error("the key failure was not logged")
	}

	if err := os.Rename(keyFile+".away", keyFile); err != nil {
		t.Fatal(err)
	}
	h.refresh()
	if _, err := h.root.enroll(context.Background(), req); err != nil {
		t.Fatalf("Enroll after the key came back: %v", err)
	}
}
