package issuer_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
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
