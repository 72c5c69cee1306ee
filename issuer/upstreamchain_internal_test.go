package issuer

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// TestChainUnderUpstreamEndsAtUpstreamRoot: under an upstream PKI the
// issuer is given the bundle's roots (the upstream's root, as
// Intermediates does with OwnRoots); a response then carries the
// intermediate, meshca's CA and the upstream's intermediate, and its last
// entry, which istio-agent takes as ROOTCA, is the upstream's root alone,
// against which the leaf verifies.
func TestChainUnderUpstreamEndsAtUpstreamRoot(t *testing.T) {
	w := crossWorld{now: time.Now(), td: spiffeid.RequireTrustDomainFromString("cluster.local")}
	upRoot := testkit.UpstreamCA(t, nil, "upchain-root", -1, w.now)
	upInter := testkit.UpstreamCA(t, upRoot, "upchain-inter", 2, w.now)
	meshCA := testkit.UpstreamCA(t, upInter, "upchain-meshca", 1, w.now, upInter.Certificate)
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
