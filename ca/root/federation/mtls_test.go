package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// trustSet is what a workload of m trusts: its own roots and the federated
// bundles its root fetched.
func trustSet(m *mesh, federated []trust.DomainBundle) *x509bundle.Set {
	set := x509bundle.NewSet(x509bundle.FromX509Authorities(m.td, m.rootCerts()))
	for _, d := range federated {
		set.Add(x509bundle.FromX509Authorities(d.TrustDomain, d.Roots.Roots()))
	}
	return set
}

// mtls runs one mutual TLS exchange over loopback: the client sends "ping"
// after its handshake and the server answers "pong" after its own. It
// returns each side's error; both are nil only when each side verified the
// other.
func mtls(t *testing.T, configs func() (client, server *tls.Config)) (clientErr, serverErr error) {
	t.Helper()
	client, server := configs()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	srvDone := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if err := tc.HandshakeContext(ctx); err != nil {
			srvDone <- err
			return
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err != nil {
			srvDone <- err
			return
		}
		_, err = tc.Write([]byte("pong"))
		srvDone <- err
	}()
	clientErr = func() error {
		d := tls.Dialer{Config: client}
		c, err := d.DialContext(ctx, "tcp", lis.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "pong" {
			return errors.New("unexpected answer " + string(buf))
		}
		return nil
	}()
	return clientErr, <-srvDone
}

// TestFederatedWorkloadsMTLS: two meshes with their own roots and trust
// domains exchange bundles through their endpoints; afterwards a workload
// of each completes mutual TLS with go-spiffe's tlsconfig, each side
// trusting its own root and the federated one. Before the exchange the
// same handshake fails.
func TestFederatedWorkloadsMTLS(t *testing.T) {
	a, b := newMesh(t, "a"), newMesh(t, "b")
	web := newWebPKI(t)
	epA, epB := webEndpoint(t, a, web, nil), webEndpoint(t, b, web, nil)
	fetcherOf := func(remote *mesh, url string) *Fetcher {
		f, err := NewFetcher(FetcherConfig{Relationships: []Relationship{{
			TrustDomain: remote.td, URL: url, Profile: ProfileHTTPSWeb, WebRoots: web.pool,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	fa, fb := fetcherOf(b, epB.url), fetcherOf(a, epA.url)

	idA := spiffeid.RequireFromPath(a.td, "/ns/x/sa/y")
	idB := spiffeid.RequireFromPath(b.td, "/ns/x/sa/z")
	svidA, svidB := workloadSVID(t, a.roots[0], idA), workloadSVID(t, b.roots[0], idB)

	configs := func() (client, server *tls.Config) {
		// A's workload calls B's and accepts exactly B's identity; B's
		// accepts any workload of trust domain a.example.
		client = tlsconfig.MTLSClientConfig(svidA, trustSet(a, fa.Domains()), tlsconfig.AuthorizeID(idB))
		server = tlsconfig.MTLSServerConfig(svidB, trustSet(b, fb.Domains()), tlsconfig.AuthorizeMemberOf(a.td))
		return client, server
	}

	// Without the exchange each side trusts only its own root.
	cErr, sErr := mtls(t, configs)
	if cErr == nil && sErr == nil {
		t.Fatal("mTLS across meshes succeeded before any bundle exchange")
	}
	if !strings.Contains(errors.Join(cErr, sErr).Error(), "x509svid") {
		t.Errorf("handshake failed for another reason than SVID verification: client %v, server %v", cErr, sErr)
	}

	if err := fa.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Only A has B's bundle: B still refuses A's workload.
	if cErr, sErr := mtls(t, configs); sErr == nil {
		t.Fatalf("B accepted A's workload without A's bundle (client error %v)", cErr)
	}

	if err := fb.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if cErr, sErr := mtls(t, configs); cErr != nil || sErr != nil {
		t.Fatalf("mTLS after the exchange: client %v, server %v", cErr, sErr)
	}

	// Federation trusts B's roots for b.example only: a certificate from
	// A's root claiming a b.example identity is refused by A's own client.
	forged := leafSVID(t, a.roots[0], idB)
	client := tlsconfig.MTLSClientConfig(svidA, trustSet(a, fa.Domains()), tlsconfig.AuthorizeID(idB))
	server := tlsconfig.MTLSServerConfig(forged, trustSet(b, fb.Domains()), tlsconfig.AuthorizeMemberOf(a.td))
	if cErr, _ := mtls(t, func() (*tls.Config, *tls.Config) { return client, server }); cErr == nil {
		t.Fatal("A's client accepted a b.example SVID signed by A's own root")
	}
	// And B's workload is authorized by its SPIFFE ID, not merely by
	// chaining: A's client expecting another B identity refuses it.
	other := spiffeid.RequireFromPath(b.td, "/ns/x/sa/other")
	client = tlsconfig.MTLSClientConfig(svidA, trustSet(a, fa.Domains()), tlsconfig.AuthorizeID(other))
	server = tlsconfig.MTLSServerConfig(svidB, trustSet(b, fb.Domains()), tlsconfig.AuthorizeMemberOf(a.td))
	if cErr, _ := mtls(t, func() (*tls.Config, *tls.Config) { return client, server }); cErr == nil || !strings.Contains(cErr.Error(), "unexpected ID") {
		t.Fatalf("A's client with another expected ID: %v, want an unexpected-ID error", cErr)
	}
}
