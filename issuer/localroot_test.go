package issuer_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// blockingListener accepts nothing until it is closed; a server on it runs
// inside a synctest bubble.
type blockingListener struct{ closed chan struct{} }

func (l blockingListener) Accept() (net.Conn, error) { <-l.closed; return nil, net.ErrClosed }
func (l blockingListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}
func (blockingListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// crlSignedBy reports whether one of crls is signed by c.
func crlSignedBy(t *testing.T, crls []trust.CRL, c *x509.Certificate) bool {
	t.Helper()
	for _, crl := range crls {
		rl, err := x509.ParseRevocationList(crl.DER)
		if err != nil {
			t.Fatal(err)
		}
		if rl.CheckSignatureFrom(c) == nil {
			return true
		}
	}
	return false
}

// A standalone issuer (meshca dev, or an issuer with root.dir) rotates its
// intermediate under the local root like one under a central root: with
// short intermediates it keeps issuing through three rotations, every
// certificate chains to the local root, each intermediate has a CRL out
// before it signs, and the serving certificate follows the intermediate.
func TestLocalRootRotatesIntermediates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, logs := captureLogs(t)
		tree := testkit.New(t, testkit.Options{})
		local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{
			Root: tree.Root, TrustDomain: tree.TrustDomain, Cluster: "dev", ServingNames: []string{"localhost"}, TTL: time.Hour,
		})
		if err != nil {
			t.Fatal(err)
		}
		first, tb, err := local.NewIntermediate(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		db := &memStore{}
		dl := newDenyList(t, db, log)
		iss, err := issuer.New(issuer.Config{
			TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: first, Bundle: tb.OwnRoots(),
			Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}}},
			Recorder: db, DenyList: dl, MinTTL: time.Minute, DefaultTTL: 10 * time.Minute, MaxTTL: time.Hour, Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		crls, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{
			Issuer: iss, DenyList: dl, Store: db, Root: issuer.FixedCA(tree.Root), Jitter: func() float64 { return 0.5 }, Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		loop, err := issuer.NewIntermediates(issuer.IntermediatesConfig{Issuer: iss, Root: local, Bundle: tb, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: iss, Hosts: []string{"localhost"}, CRLs: crls})
		if err != nil {
			t.Fatal(err)
		}
		runInBackground(t, "DenyList.Run", dl.Run)
		runInBackground(t, "CRLSigner.Run", crls.Run)
		runInBackground(t, "Intermediates.Run", loop.Run)
		runInBackground(t, "Server.Serve", func(ctx context.Context) error {
			return srv.Serve(ctx, blockingListener{closed: make(chan struct{})})
		})
		synctest.Wait()

		var seen []*x509.Certificate // intermediates in the order they signed
		servingBy := map[string]bool{}
		for end := time.Now().Add(4 * time.Hour); time.Now().Before(end); time.Sleep(time.Minute) {
			synctest.Wait()
			chain, err := iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
			if err != nil {
				t.Fatalf("issue at %v: %v", time.Now(), err)
			}
			verifyChain(t, chain, tb)
			inter := chain[1]
			if inter.CheckSignatureFrom(tree.Root.Certificate) != nil || inter.NotAfter.After(tree.Root.Certificate.NotAfter) {
				t.Fatalf("intermediate %s is not signed by the local root within its life", trust.SerialHex(inter.SerialNumber))
			}
			if len(seen) == 0 || !seen[len(seen)-1].Equal(inter) {
				current, _ := crls.Current()
				if !crlSignedBy(t, current, inter) {
					t.Fatalf("intermediate %s signs without a CRL of its own", trust.SerialHex(inter.SerialNumber))
				}
				seen = append(seen, inter)
			}
			serving, err := srv.GetCertificate(&tls.ClientHelloInfo{})
			if err != nil {
				t.Fatal(err)
			}
			if len(serving.Certificate) < 2 || serving.Leaf.CheckSignatureFrom(inter) != nil {
				t.Fatalf("at %v the serving certificate is not signed by the active intermediate %s", time.Now(), trust.SerialHex(inter.SerialNumber))
			}
			servingBy[string(serving.Certificate[1])] = true
		}
		if len(seen) < 4 {
			t.Fatalf("%d intermediates signed in 4 hours of 1 h intermediates, want at least 4 (three rotations)", len(seen))
		}
		if len(servingBy) != len(seen) {
			t.Errorf("serving certificates came from %d intermediates, issued ones from %d", len(servingBy), len(seen))
		}
		assertNoSecrets(t, logs.String())
	})
}

// A local root never mints an intermediate that outlives it, and refuses to
// mint once it has expired.
func TestLocalRootNeverOutlivesRoot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tree := testkit.New(t, testkit.Options{RootTTL: 2 * time.Hour})
		local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: tree.Root, TrustDomain: tree.TrustDomain, Cluster: "dev", TTL: 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		a, _, err := local.NewIntermediate(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !a.Certificate.NotAfter.Equal(tree.Root.Certificate.NotAfter) {
			t.Errorf("intermediate expires at %v, want the root's %v", a.Certificate.NotAfter, tree.Root.Certificate.NotAfter)
		}
		time.Sleep(time.Until(tree.Root.Certificate.NotAfter) + time.Second)
		if _, _, err := local.NewIntermediate(t.Context()); !errors.Is(err, ca.ErrCAExpired) {
			t.Errorf("minting under an expired root: %v, want ErrCAExpired", err)
		}
	})
}

func TestLocalRootConfigRefusesShortTTL(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	for _, ttl := range []time.Duration{-time.Hour, time.Second, issuer.MinLocalIntermediateTTL - time.Nanosecond} {
		if _, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: tree.Root, TrustDomain: tree.TrustDomain, Cluster: "dev", TTL: ttl}); err == nil {
			t.Errorf("TTL %v accepted", ttl)
		}
	}
	if _, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: tree.Intermediate, TrustDomain: tree.TrustDomain, Cluster: "dev"}); err == nil {
		t.Error("an intermediate accepted as the local root")
	}
}

// A local root mints intermediates that admit the granted DNS names
// exactly, and refuses names that are not DNS names.
func TestLocalRootWorkloadDNSNames(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	names := []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}
	lr, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: tree.Root, TrustDomain: tree.TrustDomain, Cluster: "dev",
		ServingNames: []string{"localhost"}, WorkloadDNSNames: names})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := lr.NewIntermediate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := a.Certificate
	if want := []string{"localhost", names[0], names[1]}; !slices.Equal(c.PermittedDNSDomains, want) ||
		!slices.Equal(c.ExcludedDNSDomains, []string{"." + names[0], "." + names[1]}) {
		t.Errorf("intermediate permits %q, excludes %q", c.PermittedDNSDomains, c.ExcludedDNSDomains)
	}
	for _, bad := range []string{"*.istio-system.svc", "10.0.0.1", "Istiod.svc"} {
		if _, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: tree.Root, TrustDomain: tree.TrustDomain, Cluster: "dev",
			WorkloadDNSNames: []string{bad}}); err == nil {
			t.Errorf("workload DNS name %q accepted", bad)
		}
	}
}
