package issuer_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// An issuer configured to serve under a name its intermediate was not
// given (the root's, another host, an IP) serves without it, so no client
// can be pointed at it under that name; with no permitted name left it
// refuses to start.
func TestServingCertificateStaysWithinIntermediate(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Cluster: "east", ServingNames: []string{"istiod.istio-system.svc"}})
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "east", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{}, Recorder: &fakeRecorder{}, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: iss, Hosts: []string{"istiod.istio-system.svc", "meshca-root.example", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := srv.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cert.Leaf.DNSNames, []string{"istiod.istio-system.svc"}) || len(cert.Leaf.IPAddresses) != 0 {
		t.Errorf("serving certificate names DNS %v and IPs %v, want istiod.istio-system.svc only", cert.Leaf.DNSNames, cert.Leaf.IPAddresses)
	}
	_, err = issuer.NewServer(issuer.ServerConfig{Issuer: iss, Hosts: []string{"meshca-root.example", "10.0.0.1"}})
	if err == nil || !strings.Contains(err.Error(), "permits none of the serving names") {
		t.Fatalf("NewServer with only foreign names: %v, want a refusal", err)
	}
}

// istiod's DNS-granted certificate and the issuer's serving certificate
// come from the same intermediate and verify for the same host name; only
// the serving certificate passes meshca's server check, and no workload can
// get a certificate naming the issuer's identity.
func TestServingCertificateIsNotAWorkloadCertificate(t *testing.T) {
	f := newDNSFixture(t, istiodNames, istiodNames)
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: f.iss, Hosts: []string{"istiod.istio-system.svc"}})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := srv.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(serving.Leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("serving certificate usages %v, want server authentication only", serving.Leaf.ExtKeyUsage)
	}
	istiod, err := f.iss.Issue(context.Background(), issuer.Request{Token: istiodToken,
		CSR: csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{DNSNames: istiodNames[:1]})})
	if err != nil {
		t.Fatal(err)
	}
	check := trust.ServerCheck{Cluster: "test"} // the testkit intermediate's cluster
	for name, tc := range map[string]struct {
		leaf *x509.Certificate
		ok   bool
	}{"serving": {serving.Leaf, true}, "istiod": {istiod[0], false}} {
		chain := verifiedFor(t, f, tc.leaf, "istiod.istio-system.svc")
		if err := check.VerifyChain(chain); (err == nil) != tc.ok {
			t.Errorf("%s certificate: server check %v, want ok=%v", name, err, tc.ok)
		}
	}
	// The one URI a serving certificate must carry, asked for by a workload.
	id, _ := trust.ServingServerID(f.tree.Intermediate.Certificate)
	before := f.rec.count()
	chain, err := f.iss.Issue(context.Background(), issuer.Request{Token: istiodToken,
		CSR: csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{URIs: []*url.URL{id.URL()}, DNSNames: istiodNames[:1]})})
	if err == nil || chain != nil || f.rec.count() != before {
		t.Fatalf("a CSR naming %s: chain %v, err %v, recorded %d", id, chain, err, f.rec.count()-before)
	}
}

// verifiedFor verifies leaf, signed by f's intermediate, as a server
// certificate for host and returns its chain.
func verifiedFor(t *testing.T, f *fixture, leaf *x509.Certificate, host string) []*x509.Certificate {
	t.Helper()
	inters := x509.NewCertPool()
	inters.AddCert(f.tree.Intermediate.Certificate)
	chains, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: f.tree.Bundle.Pool(), Intermediates: inters,
		CurrentTime: f.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatalf("%v does not verify for %s: %v", leaf.URIs, host, err)
	}
	return chains[0]
}
