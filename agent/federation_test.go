package agent

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshca/meshca/agent/sdstest"
	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/testkit"
)

var otherTD = spiffeid.RequireTrustDomainFromString("other.example")

// nextUntil reads updates from s until one satisfies ok, and returns it.
func nextUntil(t *testing.T, s *sdstest.Subscription, what string, ok func(*sdstest.Update) bool) *sdstest.Update {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if u := next(t, s); ok(u) {
			return u
		}
	}
	t.Fatalf("subscription %q: no update with %s within %v", s.Name, what, waitTimeout)
	return nil
}

// sameCerts reports whether got holds exactly want, in any order.
func sameCerts(got []*x509.Certificate, want ...*x509.Certificate) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, w.Equal) {
			return false
		}
	}
	return true
}

func bundleIs(b *x509bundle.Bundle, want ...*x509.Certificate) bool {
	return b != nil && sameCerts(b.X509Authorities(), want...)
}

func dummyToken(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	writeTestFile(t, path, "token")
	return path
}

// waitSource waits until the X509Source's bundle for td holds exactly want;
// with want empty, until it has no bundle for td.
func waitSource(t *testing.T, src *workloadapi.X509Source, td spiffeid.TrustDomain, want ...*x509.Certificate) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		b, err := src.GetX509BundleForTrustDomain(td)
		if (len(want) == 0 && err != nil) || (err == nil && bundleIs(b, want...)) {
			return
		}
		select {
		case <-src.Updated():
		case <-deadline:
			t.Fatalf("X509Source: the bundle of %s never held the %d roots wanted", td, len(want))
		}
	}
}

// TestAgentFollowsIssuerBundle runs the agent against an issuer that
// publishes a trust bundle with a federated trust domain, then a new own
// root, then switches to that root.
func TestAgentFollowsIssuerBundle(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	fi := newFakeIssuer(t, tree, true)
	fed1, fed2 := federatedRoot(t, "fed1"), federatedRoot(t, "fed2")
	root1 := tree.Root.Certificate
	fi.pushBundle(signedProto(t, trustBundle(10, "cluster.local", []*x509.Certificate{root1}, map[string][]*x509.Certificate{"other.example": {fed1}}), tree.Root))

	ra := startAgent(t, fi.addr, fi.bundleFile, dummyToken(t), 2*time.Second)
	ra.logs.waitFor(t, "trust bundle updated", `"sequence":10`)
	e := envoy(t, ra.cfg.SDSSocket, "node")
	def := subscribe(t, e, ResourceDefault)
	rootCA := subscribe(t, e, ResourceRootCA)
	all := subscribe(t, e, resourceAll)
	other := subscribe(t, e, otherTD.IDString())
	own := subscribe(t, e, "spiffe://cluster.local")
	next(t, def)
	if u := next(t, rootCA); !sameCerts(u.Roots, root1) {
		t.Errorf("ROOTCA: %d roots, want only the own root", len(u.Roots))
	}
	if u := next(t, own); !sameCerts(u.Roots, root1) {
		t.Errorf("spiffe://cluster.local: %d roots, want only the own root", len(u.Roots))
	}
	if u := next(t, all); !sameCerts(u.Roots, root1, fed1) {
		t.Errorf("ALL: %d roots, want the own and the federated root", len(u.Roots))
	}
	if u := next(t, other); !sameCerts(u.Roots, fed1) {
		t.Errorf("spiffe://other.example: %d roots, want the federated root", len(u.Roots))
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	addr := workloadapi.WithAddr("unix://" + ra.cfg.WorkloadSocket)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	waitSource(t, src, otherTD, fed1)
	waitSource(t, src, webID.TrustDomain(), root1)
	x509ctx, err := workloadapi.FetchX509Context(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := x509ctx.Bundles.Get(otherTD); x509ctx.Bundles.Len() != 2 || !bundleIs(b, fed1) {
		t.Errorf("FetchX509Context: %d bundles, want cluster.local and other.example with its root", x509ctx.Bundles.Len())
	}
	set, err := workloadapi.FetchX509Bundles(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := set.Get(otherTD); set.Len() != 2 || !bundleIs(b, fed1) {
		t.Errorf("FetchX509Bundles: %d bundles, want cluster.local and other.example with its root", set.Len())
	}

	// A new own root and a second federated root: pushed at once, without
	// waiting for a renewal.
	root2CA, inter2 := otherTree(t)
	root2 := root2CA.Certificate
	fi.pushBundle(signedProto(t, trustBundle(11, "cluster.local", []*x509.Certificate{root1, root2}, map[string][]*x509.Certificate{"other.example": {fed1, fed2}}), tree.Root))
	if u := next(t, rootCA); !sameCerts(u.Roots, root1, root2) {
		t.Errorf("ROOTCA after the push: %d roots, want both own roots", len(u.Roots))
	}
	if u := next(t, all); !sameCerts(u.Roots, root1, root2, fed1, fed2) {
		t.Errorf("ALL after the push: %d roots, want 4", len(u.Roots))
	}
	if u := next(t, other); !sameCerts(u.Roots, fed1, fed2) {
		t.Errorf("spiffe://other.example after the push: %d roots, want both federated roots", len(u.Roots))
	}
	waitSource(t, src, otherTD, fed1, fed2)
	waitSource(t, src, webID.TrustDomain(), root1, root2)
	ra.logs.waitFor(t, "trust bundle updated", `"sequence":11`)
	bundlePEM, err := os.ReadFile(filepath.Join(ra.cfg.OutputDir, bundleFile))
	if err != nil || !strings.Contains(string(bundlePEM), pemStrings(root2)[0]) {
		t.Errorf("bundle.pem does not hold the new root (%v)", err)
	}

	// The issuer switches to the new root and drops its connections: the
	// agent connects again, trusts the new serving certificate and gets a
	// certificate under the new root.
	fi.setCA(t, root2CA, inter2)
	fi.dropConnections()
	nextUntil(t, def, "a chain under the new root", func(u *sdstest.Update) bool { return u.Chain[1].Equal(inter2.Certificate) })

	// An older bundle and a malformed one are ignored; the watch goes on.
	fi.pushBundle(trustBundle(9, "cluster.local", []*x509.Certificate{root1}, nil))
	ra.logs.waitFor(t, "trust bundle rejected", `"reason":"stale"`, `"sequence":9`)
	fi.pushBundle(&meshcav1.Bundle{Sequence: 12, TrustDomains: []*meshcav1.TrustDomainBundle{{TrustDomain: "cluster.local", X509Authorities: [][]byte{[]byte("not a certificate")}}}})
	ra.logs.waitFor(t, "trust bundle rejected", `"reason":"malformed"`, `"sequence":12`)
	snap, _ := ra.pub.Current()
	if !sameCerts(snap.Bundle().Roots(), root1, root2) || len(snap.FederatedBundles()) != 1 || !sameCerts(snap.FederatedBundles()[0].Roots.Roots(), fed1, fed2) {
		t.Error("an ignored bundle changed what is served")
	}
	// An unsigned bundle that adds a federated domain is rejected.
	fi.pushBundle(trustBundle(13, "cluster.local", []*x509.Certificate{root2}, map[string][]*x509.Certificate{"evil.example": {federatedRoot(t, "evil")}}))
	ra.logs.waitFor(t, "not vouched for by a trusted root", `"sequence":13`)
	// Signed by the new root, known from bundle 11.
	fi.pushBundle(signedProto(t, trustBundle(14, "cluster.local", []*x509.Certificate{root2}, nil), root2CA))
	if u := next(t, all); !sameCerts(u.Roots, root1, root2) {
		// root1 stays: it is in the CA bundle file.
		t.Errorf("ALL after federation ended: %d roots, want the file's root and the new root", len(u.Roots))
	}
	waitSource(t, src, otherTD) // gone
	waitSource(t, src, webID.TrustDomain(), root1, root2)
}

// TestAgentWithoutBundleService: an issuer without BundleService (a plain
// Istio CA) stops the watch once, with one INFO line; the agent keeps
// renewing and serving the CA bundle file's roots.
func TestAgentWithoutBundleService(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	fi := newFakeIssuer(t, tree, false)
	ra := startAgent(t, fi.addr, fi.bundleFile, dummyToken(t), 2*time.Second)
	line := ra.logs.waitFor(t, "does not publish trust bundles")
	if !strings.Contains(line, `"level":"INFO"`) {
		t.Errorf("log line %s, want INFO", line)
	}
	e := envoy(t, ra.cfg.SDSSocket, "node")
	def := subscribe(t, e, ResourceDefault)
	first := next(t, def)
	if u := next(t, subscribe(t, e, resourceAll)); !sameCerts(u.Roots, tree.Root.Certificate) {
		t.Errorf("ALL: %d roots, want the CA bundle file's root", len(u.Roots))
	}
	if u := next(t, def); u.Chain[0].Equal(first.Chain[0]) {
		t.Error("no renewal")
	}
	if n := strings.Count(ra.logs.String(), "does not publish trust bundles"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	if err := ra.ready(); err != nil {
		t.Errorf("not ready: %v", err)
	}
}

// TestAgentBundleWatchDisabled: with DisableBundleWatch the issuer is
// never asked for bundles.
func TestAgentBundleWatchDisabled(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	fi := newFakeIssuer(t, tree, true)
	fi.pushBundle(trustBundle(10, "cluster.local", []*x509.Certificate{tree.Root.Certificate}, map[string][]*x509.Certificate{"other.example": {federatedRoot(t, "fed1")}}))
	dir := t.TempDir()
	cfg := Config{
		IssuerAddress: fi.addr, CABundleFile: fi.bundleFile, TokenFile: dummyToken(t), TTL: time.Hour,
		SDSSocket: filepath.Join(dir, "sds"), DisableBundleWatch: true, Logger: discardLogger(),
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer testkit.Go(t, "Run", a.Run)()
	e := envoy(t, cfg.SDSSocket, "node")
	next(t, subscribe(t, e, ResourceDefault))
	if u := next(t, subscribe(t, e, resourceAll)); !sameCerts(u.Roots, tree.Root.Certificate) {
		t.Errorf("ALL: %d roots, want only the CA bundle file's root", len(u.Roots))
	}
	if calls := fi.watchCalls(); len(calls) != 0 {
		t.Errorf("%d bundle watches, want none", len(calls))
	}
}
