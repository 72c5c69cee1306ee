package trust_test

import (
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// serverChain signs a serving certificate for the given names with a and
// verifies it against roots; it returns the verified chain or the error.
func serverChain(t *testing.T, a *ca.Authority, roots *trust.Bundle, dns []string, ips []net.IP, uris []*url.URL) ([]*x509.Certificate, error) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), DNSNames: dns, IPAddresses: ips, URIs: uris,
		NotBefore: t0.Add(-time.Minute), NotAfter: t0.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaf := testkit.Certificate(t, tmpl, a.Certificate, testkit.Key(t, "server").Public(), a.Signer)
	inters := x509.NewCertPool()
	for _, c := range append([]*x509.Certificate{a.Certificate}, a.Chain...) {
		if !slices.ContainsFunc(roots.Roots(), c.Equal) {
			inters.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots.Pool(), Intermediates: inters, CurrentTime: t0,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, err
	}
	return chains[0], nil
}

// An intermediate vouches only for the serving names it was given: not the
// root's DNS name, not another name, not any IP address it was not given.
func TestIntermediateServingNameConstraints(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0, Cluster: "east", ServingNames: []string{"istiod.istio-system.svc", "10.0.0.7"}})
	cases := []struct {
		name string
		dns  []string
		ips  []net.IP
		ok   bool
	}{
		{"given DNS name", []string{"istiod.istio-system.svc"}, nil, true},
		{"given IP", nil, []net.IP{net.ParseIP("10.0.0.7")}, true},
		{"root's DNS name", []string{"meshca-root.meshca-system.svc"}, nil, false},
		{"another cluster's name", []string{"istiod.west.svc"}, nil, false},
		{"IP not given", nil, []net.IP{net.ParseIP("10.0.0.8")}, false},
		{"loopback", nil, []net.IP{net.ParseIP("127.0.0.1")}, false},
		{"IPv6", nil, []net.IP{net.ParseIP("::1")}, false},
		{"given and foreign name", []string{"istiod.istio-system.svc", "localhost"}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := serverChain(t, tree.Intermediate, tree.Bundle, tc.dns, tc.ips, nil)
			if tc.ok != (err == nil) {
				t.Fatalf("verify = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	// Without serving names an intermediate vouches for no DNS name nor IP.
	bare := testkit.New(t, testkit.Options{Now: t0, ServingNames: []string{}})
	for _, dns := range [][]string{{"localhost"}, {"istiod.istio-system.svc"}} {
		if _, err := serverChain(t, bare.Intermediate, bare.Bundle, dns, nil, nil); err == nil {
			t.Errorf("intermediate without serving names vouched for %v", dns)
		}
	}
	if _, err := serverChain(t, bare.Intermediate, bare.Bundle, nil, []net.IP{net.ParseIP("127.0.0.1")}, nil); err == nil {
		t.Error("intermediate without serving names vouched for 127.0.0.1")
	}
}

func TestSplitServingNamesRejectsBadNames(t *testing.T) {
	for _, n := range []string{"", "*.svc", "a..b", "Upper.svc", "a/b", "-a.svc", ".svc"} {
		if _, _, err := trust.SplitServingNames([]string{n}); err == nil {
			t.Errorf("SplitServingNames(%q) accepted", n)
		}
	}
}

func TestServerCheck(t *testing.T) {
	east := testkit.New(t, testkit.Options{Now: t0, Cluster: "east", TrustDomain: "mesh.example"})
	td := spiffeid.RequireTrustDomainFromString("mesh.example")
	eastID, ok := trust.ServingServerID(east.Intermediate.Certificate)
	if want, _ := trust.IssuerServerID(td, "east"); !ok || eastID != want {
		t.Fatalf("ServingServerID = %v, %v; want %v", eastID, ok, want)
	}
	eastChain, err := serverChain(t, east.Intermediate, east.Bundle, []string{"localhost"}, nil, []*url.URL{eastID.URL()})
	if err != nil {
		t.Fatal(err)
	}
	// Workload certificates under east's intermediate, for the host the
	// issuer serves under (a DNS grant), or with no URI at all, or with the
	// issuer's identity beside a workload's: none is the issuer's.
	workload := spiffeid.RequireFromPath(td, "/ns/istio-system/sa/istiod")
	workloadChain, err := serverChain(t, east.Intermediate, east.Bundle, []string{"localhost"}, nil, []*url.URL{workload.URL()})
	if err != nil {
		t.Fatal(err)
	}
	bareChain, err := serverChain(t, east.Intermediate, east.Bundle, []string{"localhost"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	bothChain, err := serverChain(t, east.Intermediate, east.Bundle, []string{"localhost"}, nil, []*url.URL{workload.URL(), eastID.URL()})
	if err != nil {
		t.Fatal(err)
	}
	rootChain, err := serverChain(t, east.Root, east.Bundle, []string{"localhost"}, nil, []*url.URL{trust.RootServerURI})
	if err != nil {
		t.Fatal(err)
	}
	// An issuer mints a leaf that claims to be the root: the URN fails the
	// intermediate's URI constraint, so the chain does not even verify.
	if _, err := serverChain(t, east.Intermediate, east.Bundle, []string{"localhost"}, nil, []*url.URL{trust.RootServerURI}); err == nil {
		t.Error("an intermediate signed a leaf naming the root")
	}
	// An issuer mints a leaf naming west's issuer: the identity must be on
	// the CA, so this is still east.
	westID, _ := trust.IssuerServerID(td, "west")
	forged, err := serverChain(t, east.Intermediate, east.Bundle, []string{"localhost"}, nil, []*url.URL{westID.URL()})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		check trust.ServerCheck
		chain []*x509.Certificate
		ok    bool
	}{
		{"east for east", trust.ServerCheck{Cluster: "east"}, eastChain, true},
		{"workload under east for east", trust.ServerCheck{Cluster: "east"}, workloadChain, false},
		{"workload under east for any issuer", trust.ServerCheck{}, workloadChain, false},
		{"leaf without URI for east", trust.ServerCheck{Cluster: "east"}, bareChain, false},
		{"leaf naming a workload and east for east", trust.ServerCheck{Cluster: "east"}, bothChain, false},
		{"east with trust domain", trust.ServerCheck{Cluster: "east", TrustDomain: td}, eastChain, true},
		{"east for west", trust.ServerCheck{Cluster: "west"}, eastChain, false},
		{"east leaf naming west", trust.ServerCheck{Cluster: "west"}, forged, false},
		{"east in another trust domain", trust.ServerCheck{Cluster: "east", TrustDomain: spiffeid.RequireTrustDomainFromString("other.example")}, eastChain, false},
		{"any issuer", trust.ServerCheck{}, eastChain, true},
		{"issuer for root", trust.ServerCheck{Root: true}, eastChain, false},
		{"root for root", trust.ServerCheck{Root: true}, rootChain, true},
		{"root for issuer", trust.ServerCheck{Cluster: "east"}, rootChain, false},
		{"root for any issuer", trust.ServerCheck{}, rootChain, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check.VerifyChain(tc.chain)
			if tc.ok != (err == nil) || err != nil && !errors.Is(err, trust.ErrWrongServer) {
				t.Fatalf("VerifyChain = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// A client holding the root's CRL refuses an issuer whose intermediate it
// lists, and only that one.
func TestServerCheckRevokedIntermediate(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0, Cluster: "west"})
	west, _ := trust.ServingServerID(tree.Intermediate.Certificate)
	chain, err := serverChain(t, tree.Intermediate, tree.Bundle, []string{"localhost"}, nil, []*url.URL{west.URL()})
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := tree.Root.SignCRL(ca.CRLRequest{Serials: []*big.Int{big.NewInt(99)}, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if err := (trust.ServerCheck{Cluster: "west", CRLs: []*x509.RevocationList{other}}).VerifyChain(chain); err != nil {
		t.Fatalf("unrelated CRL refused the issuer: %v", err)
	}
	_, crl, err := tree.Root.SignCRL(ca.CRLRequest{Serials: []*big.Int{tree.Intermediate.Certificate.SerialNumber}, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if err := (trust.ServerCheck{Cluster: "west", CRLs: []*x509.RevocationList{crl}}).VerifyChain(chain); !errors.Is(err, trust.ErrWrongServer) {
		t.Fatalf("revoked intermediate accepted: %v", err)
	}
	// A CRL signed by another root with the same subject does not count.
	stranger := testkit.New(t, testkit.Options{Now: t0, RootKey: "stranger"})
	_, forged, err := stranger.Root.SignCRL(ca.CRLRequest{Serials: []*big.Int{tree.Intermediate.Certificate.SerialNumber}, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if err := (trust.ServerCheck{Cluster: "west", CRLs: []*x509.RevocationList{forged}}).VerifyChain(chain); err != nil {
		t.Fatalf("a CRL of another root refused the issuer: %v", err)
	}
}
