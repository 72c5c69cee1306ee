package ca_test

import (
	"crypto/x509"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
)

// TestWorkloadDNSNamesAreExact: an intermediate for istiod's names admits
// those names in a leaf and nothing else, as crypto/x509 verifies chains:
// not a subdomain of them, not another name, not a subdomain of a serving
// name that is also a workload name.
func TestWorkloadDNSNamesAreExact(t *testing.T) {
	now := time.Now()
	root, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "root"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ikey := testkit.Key(t, "intermediate")
	workload := []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}
	ic, err := root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: ikey.Public(), TrustDomain: td, Cluster: "east",
		ServingNames: []string{"istiod.istio-system.svc", "meshca.meshca-system.svc"}, WorkloadDNSNames: workload, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	wantPermitted := []string{"istiod.istio-system.svc", "meshca.meshca-system.svc", "istiod.istio-system.svc.cluster.local"}
	wantExcluded := []string{".istiod.istio-system.svc", ".istiod.istio-system.svc.cluster.local"}
	if !slices.Equal(ic.PermittedDNSDomains, wantPermitted) || !slices.Equal(ic.ExcludedDNSDomains, wantExcluded) {
		t.Fatalf("DNS constraints permitted %q excluded %q, want %q and %q", ic.PermittedDNSDomains, ic.ExcludedDNSDomains, wantPermitted, wantExcluded)
	}
	inter, err := ca.NewAuthority(ic, ikey)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/istio-system/sa/istiod")
	roots := x509.NewCertPool()
	roots.AddCert(root.Certificate)
	for _, tc := range []struct {
		names []string
		ok    bool
	}{
		{workload, true},
		{[]string{"istiod.istio-system.svc"}, true},
		{[]string{"meshca.meshca-system.svc"}, true},
		{[]string{"sub.meshca.meshca-system.svc"}, true}, // a serving name keeps its subdomains
		{[]string{"x.istiod.istio-system.svc"}, false},
		{[]string{"x.istiod.istio-system.svc.cluster.local"}, false},
		{[]string{"istiod-remote.istio-system.svc"}, false},
		{[]string{"istio-system.svc"}, false},
	} {
		leaf, err := inter.SignLeaf(ca.LeafRequest{
			PublicKey: testkit.Key(t, "leaf").Public(), URIs: []*url.URL{id.URL()}, DNSNames: tc.names, TTL: time.Hour, Now: now,
		})
		if err != nil {
			t.Fatal(err)
		}
		inters := x509.NewCertPool()
		inters.AddCert(ic)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if (err == nil) != tc.ok {
			t.Errorf("leaf for %q: verify err = %v, want ok=%v", tc.names, err, tc.ok)
		}
	}
}

func TestWorkloadDNSNamesRefuseWildcards(t *testing.T) {
	root, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "root")})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"*.istio-system.svc", "Istiod.istio-system.svc", "", "istiod..svc", "10.0.0.1"} {
		_, err := root.SignIntermediate(ca.IntermediateRequest{
			PublicKey: testkit.Key(t, "intermediate").Public(), TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
			Cluster: "east", WorkloadDNSNames: []string{bad},
		})
		if err == nil {
			t.Errorf("workload DNS name %q accepted", bad)
		}
	}
}
