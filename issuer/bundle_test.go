package issuer_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/root/roottest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// serveIssuer serves iss (with bundles, nil for the default) on loopback
// and returns its address.
func serveIssuer(t *testing.T, iss *issuer.Issuer, bundles issuer.BundleSource) string {
	t.Helper()
	return serveIssuerConfig(t, issuer.ServerConfig{Issuer: iss, Bundles: bundles})
}

// serveIssuerConfig serves cfg (Hosts default to devHosts) on loopback and
// returns its address.
func serveIssuerConfig(t *testing.T, cfg issuer.ServerConfig) string {
	t.Helper()
	if cfg.Hosts == nil {
		cfg.Hosts = devHosts
	}
	srv, err := issuer.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := testkit.Serve(t, "Serve", srv.Serve)
	return addr
}

// watchToken is the bearer token of bundleClient, for the identity
// watcher: not the workload that tests revoke.
const watchToken = "watch-token"

var watcher = attest.Identity{Namespace: "default", ServiceAccount: "watcher"}

// bundleClient is an agent's view of an issuer's BundleService: TLS with
// roots, watchToken as its bearer token.
func bundleClient(t *testing.T, addr string, roots *x509.CertPool) meshcav1.BundleServiceClient {
	t.Helper()
	return bundleClientToken(t, addr, roots, watchToken)
}

// bundleClientToken is bundleClient with the bearer token tok; empty sends
// none.
func bundleClientToken(t *testing.T, addr string, roots *x509.CertPool, tok string) meshcav1.BundleServiceClient {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost"})
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerCreds(tok)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshcav1.NewBundleServiceClient(conn)
}

func watchBundles(t *testing.T, c meshcav1.BundleServiceClient, known uint64) func() *trust.TrustBundle {
	t.Helper()
	stream, err := c.WatchBundle(t.Context(), &meshcav1.WatchBundleRequest{KnownSequence: known})
	if err != nil {
		t.Fatal(err)
	}
	return func() *trust.TrustBundle {
		t.Helper()
		got := make(chan error, 1)
		var resp *meshcav1.WatchBundleResponse
		go func() {
			var err error
			resp, err = stream.Recv()
			got <- err
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no bundle within 10 s")
		}
		tb, err := trust.TrustBundleFromProto(resp.GetBundle())
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
}

func TestIssuerRelaysRootBundleAndFollowsRootRotation(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	initial := r.Roots()
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), tok, log))
	a, tb := mustIntermediate(t, up)
	iss, err := issuer.New(issuer.Config{
		TrustDomain: up.TrustDomain(), Cluster: up.Cluster(), Authority: a, Bundle: tb.OwnRoots(),
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}, watchToken: watcher}},
		Recorder: &fakeRecorder{}, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	loop := runIntermediates(t, iss, up, tb, log)
	addr := serveIssuer(t, iss, loop)
	agent := bundleClient(t, addr, tb.OwnRoots().Pool())
	next := watchBundles(t, agent, 0)

	first := next()
	if first.Sequence != tb.Sequence || !first.Equal(tb) {
		t.Fatalf("agent got bundle %d, want the root's %d", first.Sequence, tb.Sequence)
	}
	// The root's signature is relayed unchanged, so agents can check it.
	if !bytes.Equal(first.Signature, tb.Signature) || first.Signer != tb.Signer {
		t.Fatal("the issuer did not relay the root's signature")
	}
	if err := first.VerifySignature(initial, time.Now()); err != nil {
		t.Fatalf("relayed bundle: %v", err)
	}
	root1 := r.Rotate()
	second := next()
	if second.Sequence <= first.Sequence || len(second.OwnRoots().Roots()) != 2 {
		t.Fatalf("after a root joined: bundle %d with %d roots", second.Sequence, len(second.OwnRoots().Roots()))
	}
	if err := second.VerifySignature(initial, time.Now()); err != nil {
		t.Fatalf("the bundle bringing a new root is not signed by the old one: %v", err)
	}
	// While the new root is prepared, chains under the old one carry the
	// old root certified by the new one: the new root alone verifies them.
	if n := len(second.OwnRoots().CrossSigned()); n != 2 {
		t.Fatalf("bundle with a prepared root carries %d cross certificates, want 2 (one each way)", n)
	}
	chain, err := iss.Issue(t.Context(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyUnder(chain, root1); err != nil {
		t.Errorf("a chain under the old root does not verify against the prepared root alone: %v", err)
	}
	r.Activate(root1)
	third := next()
	if third.Sequence <= second.Sequence || third.ActiveRoot != trust.Fingerprint(root1) {
		t.Fatalf("after the root moved: bundle %d", third.Sequence)
	}
	if err := third.VerifySignature(second.OwnRoots(), time.Now()); err != nil || third.Signer != trust.Fingerprint(root1) {
		t.Fatalf("bundle after the root moved: %v, want signed by the new root", err)
	}

	testkit.Eventually(t, 10*time.Second, "issuer moves under the new root", func() error {
		if iss.Authority().Certificate.CheckSignatureFrom(root1) != nil {
			return errNotYet
		}
		return nil
	})
	chain, err = iss.Issue(t.Context(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, third)
	if !chain[len(chain)-1].Equal(root1) {
		t.Errorf("issued chain ends at %q, want the new root", chain[len(chain)-1].Subject.CommonName)
	}
	// ... and under the new root, the new root certified by the old one:
	// a relying party still on the old root alone verifies them.
	if len(chain) != 4 || !bytes.Equal(chain[2].RawSubjectPublicKeyInfo, root1.RawSubjectPublicKeyInfo) {
		t.Errorf("issued chain has %d certificates, want leaf, intermediate, cross certificate, root", len(chain))
	}
	for _, old := range initial.Roots() {
		if err := verifyUnder(chain, old); err != nil {
			t.Errorf("a chain under the new root does not verify against the old root alone: %v", err)
		}
	}

	// The serving certificate follows the new intermediate at once.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: third.OwnRoots().Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	peerCerts := conn.ConnectionState().PeerCertificates
	conn.Close()
	if len(peerCerts) < 2 || !peerCerts[1].Equal(iss.Authority().Certificate) {
		t.Error("serving certificate is not signed by the new intermediate")
	}
	// A client that trusts only the old root (istio-agent's CA connection
	// until its root-cert.pem follows) still reaches the issuer.
	conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: initial.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("a client on the old root alone: %v", err)
	}
	conn.Close()

	resp, err := agent.GetBundle(t.Context(), &meshcav1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetBundle().GetSequence() != third.Sequence {
		t.Errorf("GetBundle returned %d, want %d", resp.GetBundle().GetSequence(), third.Sequence)
	}
	assertNoSecrets(t, logs.String(), tok)
}

func TestIssuerServesItsOwnBundleByDefault(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}, watchToken: watcher}},
		Recorder: &fakeRecorder{}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	agent := bundleClient(t, serveIssuer(t, iss, nil), tree.Bundle.Pool())
	resp, err := agent.GetBundle(t.Context(), &meshcav1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := trust.TrustBundleFromProto(resp.GetBundle())
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(tree.Root.Certificate.NotBefore.UnixMilli())
	if tb.Sequence != seq || len(tb.Domains) != 1 || tb.Domains[0].TrustDomain != tree.TrustDomain || tb.Domains[0].Federated ||
		string(tb.Domains[0].Roots.PEM()) != string(tree.Bundle.PEM()) || tb.ActiveRoot != trust.Fingerprint(tree.Root.Certificate) {
		t.Fatalf("default bundle: %+v, want sequence %d with the issuer's root for %s", tb, seq, tree.TrustDomain)
	}
	if tb.IsSigned() {
		t.Error("an issuer without a root service signed its bundle")
	}
	if again := watchBundles(t, agent, 0)(); again.Sequence != seq {
		t.Errorf("the sequence is not stable: %d, then %d", seq, again.Sequence)
	}

	// A watcher that holds the current bundle hears only of the next.
	next := watchBundles(t, agent, seq)
	root2, inter2 := newerRoot(t, tree.TrustDomain)
	both, err := trust.NewBundle(tree.Root.Certificate, root2)
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.SetAuthority(inter2, both); err != nil {
		t.Fatal(err)
	}
	got := next()
	if want := uint64(root2.NotBefore.UnixMilli()); got.Sequence != want || got.Sequence <= seq || len(got.Domains[0].Roots.Roots()) != 2 {
		t.Errorf("after a newer root: bundle %d with %d roots, want %d with 2", got.Sequence, len(got.Domains[0].Roots.Roots()), want)
	}
}

// newerRoot returns a root issued 10 s after now and an intermediate for td
// under it.
func newerRoot(t *testing.T, td spiffeid.TrustDomain) (*x509.Certificate, *ca.Authority) {
	t.Helper()
	root, err := ca.NewRoot(ca.RootConfig{Signer: newKey(t), CommonName: "newer root", Now: time.Now().Add(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	cert, err := root.SignIntermediate(ca.IntermediateRequest{PublicKey: key.Public(), TrustDomain: td, Cluster: "dev", Now: time.Now()})
	if err != nil {
		t.Fatal(fmt.Errorf("intermediate: %w", err))
	}
	a, err := ca.NewAuthority(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return root.Certificate, a
}
