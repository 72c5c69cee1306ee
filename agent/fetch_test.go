package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
)

// otherTree is a root and intermediate with keys of their own, unrelated to
// testkit's trees (which share one root key).
func otherTree(t *testing.T) (root, inter *ca.Authority) {
	t.Helper()
	root, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "fetch-other-root"), CommonName: "other root"})
	if err != nil {
		t.Fatal(err)
	}
	ikey := testkit.Key(t, "fetch-other-intermediate")
	td := testkit.New(t, testkit.Options{}).TrustDomain
	icert, err := root.SignIntermediate(ca.IntermediateRequest{PublicKey: ikey.Public(), TrustDomain: td, Cluster: "test", ServingNames: testkit.TestServingNames, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	inter, err = ca.NewAuthority(icert, ikey)
	if err != nil {
		t.Fatal(err)
	}
	return root, inter
}

func pemStrings(certs ...*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	return out
}

func TestVerifyResponse(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	otherRootCA, otherInter := otherTree(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(a *ca.Authority) *x509.Certificate {
		leaf, err := a.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{webID.URL()}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	leaf, otherLeaf := sign(tree.Intermediate), sign(otherInter)
	for _, tc := range []struct {
		name      string
		chain     []string
		wantRoots int
		wantErr   string
	}{
		{"configured root", pemStrings(leaf, tree.Intermediate.Certificate, tree.Root.Certificate), 1, ""},
		// istio-agent would trust the root that ends the response; meshca
		// does not: an issuer must not be able to add trust anchors.
		{"new root in the response", pemStrings(otherLeaf, otherInter.Certificate, otherRootCA.Certificate), 0, "does not verify"},
		{"chain to an unknown root, ended by the configured root", pemStrings(otherLeaf, otherInter.Certificate, tree.Root.Certificate), 0, "does not verify"},
		{"too short", pemStrings(leaf), 0, "want leaf ... root"},
		{"not PEM", []string{"x", "y"}, 0, "certificate 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svid, err := verifyResponse(tc.chain, key, tree.Bundle, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(svid.Roots) != tc.wantRoots || !svid.Roots[0].Equal(tree.Root.Certificate) {
				t.Errorf("%d roots, want %d starting with the configured root", len(svid.Roots), tc.wantRoots)
			}
			if len(svid.Chain) != 2 {
				t.Errorf("chain of %d, want leaf and intermediate", len(svid.Chain))
			}
		})
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := verifyResponse(pemStrings(leaf, tree.Intermediate.Certificate, tree.Root.Certificate), other, tree.Bundle, nil); err == nil ||
		!strings.Contains(err.Error(), "our public key") {
		t.Errorf("leaf for another key: %v", err)
	}
}

func TestClientSetRoots(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	c, err := NewClient(ClientConfig{Address: "127.0.0.1:1", Roots: tree.Bundle})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := c.conn
	if err := c.SetRoots(tree.Bundle); err != nil || c.conn != conn {
		t.Errorf("same roots replaced the connection (%v)", err)
	}
	bundle, _ := otherRoot(t, tree)
	if err := c.SetRoots(bundle); err != nil || c.conn == conn || c.roots != bundle {
		t.Errorf("new roots kept the old connection (%v)", err)
	}
}

// A response to a CSR with DNS names must carry exactly those names and
// verify as a server certificate for each; one without them, with others,
// or with DNS names nobody asked for is refused.
func TestVerifyResponseDNSNames(t *testing.T) {
	names := []string{"istiod.istio-system.svc"}
	tree := testkit.New(t, testkit.Options{WorkloadDNSNames: names})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain := func(dns ...string) []string {
		leaf, err := tree.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{webID.URL()}, DNSNames: dns, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return pemStrings(leaf, tree.Intermediate.Certificate, tree.Root.Certificate)
	}
	for _, tc := range []struct {
		name    string
		chain   []string
		asked   []string
		wantErr string
	}{
		{"the names asked for", chain(names...), names, ""},
		{"names missing", chain(), names, "want"},
		{"names not asked for", chain(names...), nil, "want"},
		{"a name outside the intermediate's constraints", chain("x.istiod.istio-system.svc"), []string{"x.istiod.istio-system.svc"}, "excluded by constraint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svid, err := verifyResponse(tc.chain, key, tree.Bundle, tc.asked)
			if tc.wantErr == "" {
				if err != nil || !slices.Equal(svid.Chain[0].DNSNames, names) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
