package issuer

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// caUnder signs a CA certificate for a cached key under parent with path
// length pathLen (-1: unconstrained), as an upstream PKI signs its
// intermediates and meshca's CA; chain is what lies above parent. A nil
// parent makes a self-signed root.
func caUnder(t *testing.T, parent *ca.Authority, key string, pathLen int, now time.Time, chain ...*x509.Certificate) *ca.Authority {
	t.Helper()
	k := testkit.Key(t, key)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: key},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLen: pathLen, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	parentCert, signer := tmpl, k
	if parent != nil {
		parentCert, signer = parent.Certificate, parent.Signer
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, k.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(c, k, chain...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestChainUnderUpstreamEndsAtUpstreamRoot: under an upstream PKI the
// issuer is given the bundle's roots (the upstream's root, as
// Intermediates does with OwnRoots); a response then carries the
// intermediate, meshca's CA and the upstream's intermediate, and its last
// entry, which istio-agent takes as ROOTCA, is the upstream's root alone,
// against which the leaf verifies.
func TestChainUnderUpstreamEndsAtUpstreamRoot(t *testing.T) {
	w := crossWorld{now: time.Now(), td: spiffeid.RequireTrustDomainFromString("cluster.local")}
	upRoot := caUnder(t, nil, "upchain-root", -1, w.now)
	upInter := caUnder(t, upRoot, "upchain-inter", 2, w.now)
	meshCA := caUnder(t, upInter, "upchain-meshca", 1, w.now, upInter.Certificate)
	k := testkit.Key(t, "upchain-cluster")
	c, err := meshCA.SignIntermediate(ca.IntermediateRequest{PublicKey: k.Public(), TrustDomain: w.td, Cluster: "east",
		ServingNames: testkit.TestServingNames, TTL: 2 * time.Hour, Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.NewAuthority(c, k, meshCA.Certificate, upInter.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := trust.NewBundle(upRoot.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	iss, _ := w.issuer(t, inter, roots)
	s := iss.current()
	if len(s.chain) != 3 || !s.chain[0].Equal(inter.Certificate) || !s.chain[1].Equal(meshCA.Certificate) || !s.chain[2].Equal(upInter.Certificate) {
		t.Fatalf("chain after the leaf holds %d certificates, want the intermediate, meshca's CA and the upstream's intermediate", len(s.chain))
	}
	last, err := trust.ParseCertificates([]byte(s.tailPEM[len(s.tailPEM)-1]))
	if err != nil || len(last) != 1 || !last[0].Equal(upRoot.Certificate) {
		t.Fatalf("last entry %d certificates (%v), want the upstream's root alone", len(last), err)
	}
	leaf := issueLeaf(t, iss, w)
	if err := verifyWith(leaf, s, upRoot.Certificate, w.now); err != nil {
		t.Errorf("leaf does not verify against the upstream's root alone: %v", err)
	}
}
