package root

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// enrollAsking enrols with an intermediate CSR that asks for the given
// serving names, and returns the intermediate as an authority.
func enrollAsking(t *testing.T, conn *grpc.ClientConn, token string, dns []string, ips []net.IP) (*ca.Authority, error) {
	t.Helper()
	interKey := newKey(t)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dns, IPAddresses: ips}, interKey)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := meshcav1.NewRootServiceClient(conn).Enroll(context.Background(), &meshcav1.EnrollRequest{
		JoinToken: token, CredentialCsr: csrFor(t, newKey(t)), IntermediateCsr: csr,
	})
	if err != nil {
		return nil, err
	}
	a, err := ca.NewAuthority(mustParse(t, resp.GetIntermediateChain()[0]), interKey)
	if err != nil {
		t.Fatal(err)
	}
	return a, nil
}

// An issuer asks the root for an intermediate that vouches for the root's
// own DNS name, a parent domain of it, its IP, and names the root's
// configuration does not allow issuers: the root leaves them out, so the intermediate cannot
// sign a serving certificate that passes for the root's, and it names its
// cluster's issuer.
func TestIntermediateServingNames(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Hosts = []string{"localhost", "127.0.0.1", "meshca-root.example"}
		c.IssuerServingNames = []string{"istio-system.svc", "example", "127.0.0.1", "10.1.2.3"}
	})
	conn := h.dial(h.serve(), nil)
	_, err := enrollAsking(t, conn, h.addCluster("east", "east.example"), []string{"*.istio-system.svc"}, nil)
	wantCode(t, err, codes.InvalidArgument)
	inter, err := enrollAsking(t, conn, h.addCluster("west", "west.example"),
		[]string{"istiod.istio-system.svc", "meshca-root.example", "example", "evil.org"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.1.2.3"), net.ParseIP("10.9.9.9")})
	if err != nil {
		t.Fatal(err)
	}
	ic := inter.Certificate
	if len(ic.URIs) != 1 || ic.URIs[0].String() != "spiffe://west.example/meshca/issuer/west" {
		t.Errorf("intermediate URIs %v, want the issuer identity of west", ic.URIs)
	}
	if !slices.Equal(ic.PermittedDNSDomains, []string{"istiod.istio-system.svc"}) || len(ic.PermittedIPRanges) != 1 ||
		ic.PermittedIPRanges[0].String() != "10.1.2.3/32" {
		t.Errorf("intermediate permits DNS %v and IPs %v; want istiod.istio-system.svc and 10.1.2.3/32", ic.PermittedDNSDomains, ic.PermittedIPRanges)
	}
	now := h.clock.Now()
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"istiod.istio-system.svc", true},
		{"10.1.2.3", true},
		{"meshca-root.example", false},
		{"localhost", false},
		{"127.0.0.1", false},
		{"::1", false},
		{"evil.org", false},
		{"10.9.9.9", false},
	} {
		req := ca.LeafRequest{PublicKey: newKey(t).Public(), TTL: time.Hour, Now: now, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		if ip := net.ParseIP(tc.name); ip != nil {
			req.IPAddresses = []net.IP{ip}
		} else {
			req.DNSNames = []string{tc.name}
		}
		leaf, err := inter.SignLeaf(req)
		if err != nil {
			t.Fatal(err)
		}
		inters := x509.NewCertPool()
		inters.AddCert(ic)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: h.rootsPool(), Intermediates: inters, CurrentTime: now, KeyUsages: req.ExtKeyUsage})
		if (err == nil) != tc.want {
			t.Errorf("serving certificate for %s under west's intermediate: verify error %v, want valid=%v", tc.name, err, tc.want)
		}
	}

	// By default issuers get the Istio names, also when they ask for none,
	// and nothing else.
	h = newHarness(t, nil)
	conn = h.dial(h.serve(), nil)
	def, err := enrollAsking(t, conn, h.addCluster("north", "north.example"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := enrollAsking(t, conn, h.addCluster("south", "south.example"),
		[]string{"meshca.meshca-system.svc", "svc", "evil.org"}, []net.IP{net.ParseIP("10.1.2.3")})
	if err != nil {
		t.Fatal(err)
	}
	if got := other.Certificate.PermittedDNSDomains; !slices.Equal(got, []string{"meshca.meshca-system.svc"}) || len(other.Certificate.PermittedIPRanges) != 0 {
		t.Errorf("by default an issuer asking for broad names got DNS %v and IPs %v", got, other.Certificate.PermittedIPRanges)
	}
	if got := def.Certificate.PermittedDNSDomains; !slices.Equal(got, trust.DefaultServingNames) || len(def.Certificate.PermittedIPRanges) != 0 {
		t.Errorf("default intermediate permits DNS %v and IPs %v, want %v and none", got, def.Certificate.PermittedIPRanges, trust.DefaultServingNames)
	}
}

// The root's serving certificate names the root; a client that asks for a
// cluster's issuer refuses it.
func TestRootServingIdentity(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	handshake := func(check trust.ServerCheck) error {
		cfg := &tls.Config{RootCAs: h.rootsPool(), ServerName: "localhost", Time: h.clock.Now, MinVersion: tls.VersionTLS12,
			VerifyConnection: check.VerifyConnection}
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := handshake(trust.ServerCheck{Root: true}); err != nil {
		t.Fatalf("handshake with the root as the root: %v", err)
	}
	if err := handshake(trust.ServerCheck{Cluster: "east"}); err == nil {
		t.Fatal("the root passed for east's issuer")
	}
}
