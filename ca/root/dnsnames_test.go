package root

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpcx"
)

var istiodDNS = []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}

// leafVerifies signs a leaf for dns under inter and reports whether it
// verifies under the root's bundle as a server certificate for dns[0].
func leafVerifies(t *testing.T, h *harness, inter *ca.Authority, dns ...string) bool {
	t.Helper()
	now := h.clock.Now()
	id, _ := url.Parse("spiffe://east.example/ns/istio-system/sa/istiod")
	leaf, err := inter.SignLeaf(ca.LeafRequest{PublicKey: newKey(t).Public(), URIs: []*url.URL{id}, DNSNames: dns, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := h.root.Current()
	inters := x509.NewCertPool()
	inters.AddCert(inter.Certificate)
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: dns[0], Roots: tb.OwnRoots().Pool(), Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err == nil
}

// The root decides which workload DNS names a cluster's intermediate
// admits: those of the cluster's record, each exactly, and no other
// cluster's. An issuer cannot ask for them itself.
func TestClusterWorkloadDNSNames(t *testing.T) {
	h := newHarness(t, nil)
	conn := h.dial(h.serve(), nil)
	resp, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", DnsNames: istiodDNS}, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	east, err := enrollAsking(t, conn, resp.GetJoinToken(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := east.Certificate
	for _, n := range istiodDNS {
		if !slices.Contains(ic.PermittedDNSDomains, n) || !slices.Contains(ic.ExcludedDNSDomains, "."+n) {
			t.Errorf("intermediate permits %q and excludes %q: want %s exactly", ic.PermittedDNSDomains, ic.ExcludedDNSDomains, n)
		}
	}
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"istiod.istio-system.svc", true},
		{"istiod.istio-system.svc.cluster.local", true},
		{"x.istiod.istio-system.svc", false},
		{"x.istiod.istio-system.svc.cluster.local", false},
		{"istiod-remote.istio-system.svc", false},
	} {
		if got := leafVerifies(t, h, east, tc.name); got != tc.want {
			t.Errorf("east leaf for %s verifies: %v, want %v", tc.name, got, tc.want)
		}
	}
	// West has no workload DNS names; asking for istiod's name as a serving
	// name in its CSR is up to issuerServingNames, not to a cluster record,
	// and a name only east's record lists does not verify under west.
	west, err := enrollAsking(t, conn, h.addCluster("west", "west.example"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(west.Certificate.PermittedDNSDomains, "istiod.istio-system.svc.cluster.local") || len(west.Certificate.ExcludedDNSDomains) != 0 {
		t.Errorf("west's intermediate permits %q, excludes %q", west.Certificate.PermittedDNSDomains, west.Certificate.ExcludedDNSDomains)
	}
	if leafVerifies(t, h, west, "istiod.istio-system.svc.cluster.local") {
		t.Error("a name of east's record verifies under west's intermediate")
	}
}

func TestClusterDNSNamesRefused(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Hosts = []string{"localhost", "meshca-root.example"} })
	for _, names := range [][]string{
		{"*.istio-system.svc"}, {"Istiod.istio-system.svc"}, {"10.0.0.1"}, {"a.svc", "a.svc"},
		{"meshca-root.example"}, {"example"}, {"istiod.istio-system.svc", "x.istiod.istio-system.svc"},
	} {
		_, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", DnsNames: names}, "admin:test")
		if !errors.Is(err, grpcx.ErrInvalidArgument) {
			t.Errorf("DNS names %q: err = %v, want InvalidArgument", names, err)
		}
	}
	if _, err := h.root.cfg.Store.Cluster(context.Background(), "east"); err == nil {
		t.Error("a refused cluster add registered the cluster")
	}
}

// replace_dns_names changes an existing cluster's names (audited); the
// next intermediate admits the new ones, not the old. Other names without
// it are refused, not silently dropped.
func TestClusterDNSNamesReplaced(t *testing.T) {
	h := newHarness(t, nil)
	conn := h.dial(h.serve(), nil)
	ctx := context.Background()
	if _, err := h.root.addCluster(ctx, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", DnsNames: istiodDNS}, "admin:test"); err != nil {
		t.Fatal(err)
	}
	again := []string{"istiod-remote.istio-system.svc"}
	_, err := h.root.addCluster(ctx, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", DnsNames: again}, "admin:test")
	if !errors.Is(err, grpcx.ErrFailedPrecondition) {
		t.Fatalf("other names without replace: err = %v, want FailedPrecondition", err)
	}
	if c, _ := h.root.cfg.Store.Cluster(ctx, "east"); !slices.Equal(c.DNSNames, istiodDNS) {
		t.Fatalf("names %q after a refused add, want %q kept", c.DNSNames, istiodDNS)
	}
	// The same names, or none, need no replace: a join token for another replica.
	for _, names := range [][]string{istiodDNS, nil} {
		if _, err := h.root.addCluster(ctx, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", DnsNames: names}, "admin:test"); err != nil {
			t.Fatalf("add again with %q: %v", names, err)
		}
	}
	resp, err := h.root.addCluster(ctx, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", DnsNames: again, ReplaceDnsNames: true}, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := h.root.cfg.Store.Cluster(ctx, "east"); !slices.Equal(c.DNSNames, again) {
		t.Fatalf("names %q after replace, want %q", c.DNSNames, again)
	}
	inter, err := enrollAsking(t, conn, resp.GetJoinToken(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !leafVerifies(t, h, inter, again[0]) || leafVerifies(t, h, inter, istiodDNS[1]) {
		t.Error("the intermediate after replace does not admit exactly the new names")
	}
}
