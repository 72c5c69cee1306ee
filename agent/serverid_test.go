package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// clusterIntermediate signs an intermediate for cluster under tree's root:
// another cluster of the same mesh.
func clusterIntermediate(t *testing.T, tree *testkit.Tree, cluster string) *ca.Authority {
	t.Helper()
	key := testkit.Key(t, "intermediate-"+cluster)
	cert, err := tree.Root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: key.Public(), TrustDomain: tree.TrustDomain, Cluster: cluster, ServingNames: testkit.TestServingNames, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func fetchFrom(t *testing.T, fi *fakeIssuer, cfg ClientConfig) error {
	t.Helper()
	cfg.Address = fi.addr
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cfg.IssuerCluster == "" && cfg.ClusterID == "" {
		t.Fatal("test client has no cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Fetch(ctx, testkit.Key(t, "workload"), "secret-token", time.Hour)
	return err
}

// A west agent pointed (by address or DNS) at east's issuer, which serves
// under the same host name and chains to the same root: the agent refuses
// the handshake, and its token never reaches east.
func TestClientRefusesIssuerOfAnotherCluster(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now()})
	fi := newFakeIssuer(t, tree, true)
	fi.setCA(t, tree.Root, clusterIntermediate(t, tree, "east"))

	for name, cfg := range map[string]ClientConfig{
		"cluster id":     {Roots: tree.Bundle, ClusterID: "west"},
		"issuer cluster": {Roots: tree.Bundle, ClusterID: "Kubernetes", IssuerCluster: "west"},
	} {
		t.Run(name, func(t *testing.T) {
			err := fetchFrom(t, fi, cfg)
			if err == nil || !strings.Contains(err.Error(), "got the issuer of cluster.local/east") {
				t.Fatalf("Fetch from east as west: %v, want a refused handshake", err)
			}
			if calls, tokens := fi.received(); calls != 0 || tokens != 0 {
				t.Fatalf("east received %d requests and %d tokens", calls, tokens)
			}
		})
	}
	if err := fetchFrom(t, fi, ClientConfig{Roots: tree.Bundle, ClusterID: "east"}); err != nil {
		t.Fatalf("Fetch from east as east: %v", err)
	}
	if _, tokens := fi.received(); tokens != 1 {
		t.Fatalf("east received %d tokens, want 1", tokens)
	}
}

// istiod holds a workload certificate for istiod.istio-system.svc (a DNS
// grant) from the same intermediate that signs the issuer's serving
// certificate, and the issuer serves under that name too. Presenting it to
// an agent that dials the issuer as istiod.istio-system.svc gets through
// hostname and chain verification, but the agent refuses the handshake
// before sending its token: the certificate does not name the issuer.
func TestClientRefusesWorkloadCertificateForIssuerName(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now(), Cluster: "west", WorkloadDNSNames: []string{"istiod.istio-system.svc"}})
	fi := newFakeIssuer(t, tree, true)
	istiod := spiffeid.RequireFromPath(tree.TrustDomain, "/ns/istio-system/sa/istiod")
	key := testkit.Key(t, "istiod")
	leaf, err := tree.Intermediate.SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), URIs: []*url.URL{istiod.URL()}, DNSNames: []string{"istiod.istio-system.svc"}, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	inters := x509.NewCertPool()
	inters.AddCert(tree.Intermediate.Certificate)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "istiod.istio-system.svc", Roots: tree.Bundle.Pool(), Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("istiod's certificate does not verify for the issuer's name, the attack needs it to: %v", err)
	}
	fi.setServing(leaf, key)
	cfg := ClientConfig{Roots: tree.Bundle, ClusterID: "west", ServerName: "istiod.istio-system.svc"}
	err = fetchFrom(t, fi, cfg)
	if !errors.Is(err, trust.ErrWrongServer) && (err == nil || !strings.Contains(err.Error(), trust.ErrWrongServer.Error())) {
		t.Fatalf("Fetch from istiod posing as the issuer: %v, want a refused handshake", err)
	}
	if calls, tokens := fi.received(); calls != 0 || tokens != 0 {
		t.Fatalf("istiod received %d requests and %d tokens", calls, tokens)
	}
	// The issuer's own serving certificate, as issuer/serving.go makes it.
	server, _ := trust.ServingServerID(tree.Intermediate.Certificate)
	leaf, err = tree.Intermediate.SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), URIs: []*url.URL{server.URL()}, DNSNames: []string{"istiod.istio-system.svc"}, TTL: time.Hour,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	fi.setServing(leaf, key)
	fi.dropConnections()
	if err := fetchFrom(t, fi, cfg); err != nil {
		t.Fatalf("Fetch from the issuer: %v", err)
	}
	if _, tokens := fi.received(); tokens != 1 {
		t.Fatalf("the issuer received %d tokens, want 1", tokens)
	}
}

// A client holding the root's CRL that revokes west's intermediate refuses
// west's issuer before sending its token; before it holds the CRL, and with
// a CRL that revokes something else, it goes on.
func TestClientRefusesRevokedIssuer(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now()})
	west := clusterIntermediate(t, tree, "west")
	fi := newFakeIssuer(t, tree, true)
	fi.setCA(t, tree.Root, west)
	c, err := NewClient(ClientConfig{Address: fi.addr, Roots: tree.Bundle, ClusterID: "west"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fetch := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Fetch(ctx, testkit.Key(t, "workload"), "secret-token", time.Hour)
		return err
	}
	if err := fetch(); err != nil {
		t.Fatalf("Fetch before revocation: %v", err)
	}
	crl := func(a *ca.Authority, serial *big.Int) []byte {
		c, _, err := a.SignCRL(ca.CRLRequest{Serials: []*big.Int{serial}})
		if err != nil {
			t.Fatal(err)
		}
		return c.DER
	}
	// The issuer's own CRL (of leaves) and a root CRL of another serial.
	if err := c.SetCRLs([][]byte{crl(west, west.Certificate.SerialNumber), crl(tree.Root, big.NewInt(42))}); err != nil {
		t.Fatal(err)
	}
	if err := fetch(); err != nil {
		t.Fatalf("Fetch with unrelated CRLs: %v", err)
	}
	_, before := fi.received()
	if err := c.SetCRLs([][]byte{crl(tree.Root, west.Certificate.SerialNumber)}); err != nil {
		t.Fatal(err)
	}
	if err := fetch(); err == nil || !strings.Contains(err.Error(), "is revoked") {
		t.Fatalf("Fetch from a revoked issuer: %v, want a refused handshake", err)
	}
	if _, after := fi.received(); after != before {
		t.Fatalf("the revoked issuer received %d more tokens", after-before)
	}
}

// The Manager hands the issuer client the CRLs it verified from the trust
// bundle, so that the client can refuse a revoked issuer.
func TestManagerGivesFetcherCRLs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		t.Cleanup(f.mgr.Stop)
		rootCRL := signCRL(t, f.tree.Root, 1, time.Now(), time.Hour, 7)
		tb := signedBy(t, &trust.TrustBundle{Sequence: 5, Domains: []trust.DomainBundle{
			{TrustDomain: webID.TrustDomain(), Roots: f.tree.Bundle, CRLs: []trust.CRL{rootCRL}},
		}}, f.tree.Root)
		if _, err := f.mgr.SetTrustBundle(tb); err != nil {
			t.Fatal(err)
		}
		f.fetcher.mu.Lock()
		defer f.fetcher.mu.Unlock()
		if len(f.fetcher.crls) != 1 || !bytes.Equal(f.fetcher.crls[0], rootCRL.DER) {
			t.Fatalf("fetcher holds %d CRLs, want the root's", len(f.fetcher.crls))
		}
	})
}

// The same CRLs in another order, and other CRLs that do not revoke the
// issuer connected to, keep the connection (a bundle watch on it is not cut
// for nothing, nor every agent of the mesh reconnected at once); the next
// handshake checks the new CRLs.
func TestClientSetCRLsKeepsConnectionForSameSet(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	c, err := NewClient(ClientConfig{Address: "127.0.0.1:1", Roots: tree.Bundle})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, _, err := tree.Root.SignCRL(ca.CRLRequest{Number: big.NewInt(1), Serials: []*big.Int{big.NewInt(1)}})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := tree.Root.SignCRL(ca.CRLRequest{Number: big.NewInt(2), Serials: []*big.Int{big.NewInt(2)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCRLs([][]byte{a.DER, b.DER}); err != nil {
		t.Fatal(err)
	}
	conn := c.conn
	if err := c.SetCRLs([][]byte{b.DER, a.DER}); err != nil || c.conn != conn {
		t.Errorf("the same CRLs replaced the connection (%v)", err)
	}
	if err := c.SetCRLs([][]byte{a.DER}); err != nil || c.conn != conn {
		t.Errorf("other CRLs that revoke no issuer replaced the connection (%v)", err)
	}
	if got := c.check.Load().CRLs; len(got) != 1 || !bytes.Equal(got[0].Raw, a.DER) {
		t.Errorf("the handshake checks %d CRLs, want the one held now", len(got))
	}
}
