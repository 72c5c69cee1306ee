package issuer_test

import (
	"context"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// pluggedIssuer builds an issuer on the plugged CA p (ExternalCA).
func pluggedIssuer(t *testing.T, p *issuer.PluggedCA) *issuer.Issuer {
	t.Helper()
	roots, err := p.Roots()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev", ExternalCA: true,
		Authority: p.Authority(), Bundle: roots,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{
			goodToken: {Cluster: "dev", Namespace: "default", ServiceAccount: "web"},
		}},
		Recorder: &fakeRecorder{},
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// issueVerified issues a leaf for goodToken and verifies its chain (as
// returned, leaf first, root last) against root.
func issueVerified(t *testing.T, iss *issuer.Issuer, root *x509.Certificate) []*x509.Certificate {
	t.Helper()
	chain, err := iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatal(err)
	}
	if !chain[len(chain)-1].Equal(root) {
		t.Fatalf("chain ends in %s, want root-cert.pem's root", chain[len(chain)-1].Subject)
	}
	pool, inters := x509.NewCertPool(), x509.NewCertPool()
	pool.AddCert(root)
	for _, c := range chain[1 : len(chain)-1] {
		inters.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("leaf does not verify to the root for %v: %v", usage, err)
		}
	}
	if got := chain[0].URIs[0].String(); got != webID {
		t.Errorf("leaf SPIFFE ID %s, want %s", got, webID)
	}
	return chain
}

// TestPluggedCAIssuesAndReloads: an issuer on Istio's cacerts signs leaves
// directly with the plugged intermediate, chain up to root-cert.pem's root;
// replaced files are picked up at the next poll; broken files change
// nothing and are logged once.
func TestPluggedCAIssuesAndReloads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		root, _ := testkit.IstioRoot(t, "plugged-root", "cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
		first := testkit.IstioIntermediate(t, root, "plugged-first", now.Add(-time.Hour), now.Add(90*24*time.Hour))
		dir := t.TempDir()
		files := testkit.WriteCACerts(t, dir, first, root.Certificate)
		log, logs := captureLogs(t)
		p, err := issuer.NewPluggedCA(issuer.PluggedCAConfig{Files: files, Logger: log}, now)
		if err != nil {
			t.Fatal(err)
		}
		iss := pluggedIssuer(t, p)
		if chain := issueVerified(t, iss, root.Certificate); len(chain) != 3 || !chain[1].Equal(first.Certificate) {
			t.Fatalf("chain = %d certificates, want leaf, the plugged intermediate, root", len(chain))
		}

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, iss) }()

		// A broken set (the key of another intermediate): nothing changes.
		stray := testkit.IstioIntermediate(t, root, "plugged-stray", now.Add(-time.Hour), now.Add(90*24*time.Hour))
		strayFiles := testkit.WriteCACerts(t, t.TempDir(), stray, root.Certificate)
		key, err := os.ReadFile(strayFiles.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(files.KeyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * issuer.DefaultPluggedPollInterval)
		synctest.Wait()
		if !iss.Authority().Certificate.Equal(first.Certificate) {
			t.Fatal("a cacerts set whose key does not match was loaded")
		}
		issueVerified(t, iss, root.Certificate)
		if n := strings.Count(logs.String(), "are not usable"); n != 1 {
			t.Errorf("the broken set was logged %d times over three polls, want once", n)
		}

		// The operator (or cert-manager) replaces the intermediate.
		second := testkit.IstioIntermediate(t, root, "plugged-second", now.Add(-time.Hour), now.Add(180*24*time.Hour))
		testkit.WriteCACerts(t, dir, second, root.Certificate)
		time.Sleep(issuer.DefaultPluggedPollInterval)
		synctest.Wait()
		if !iss.Authority().Certificate.Equal(second.Certificate) {
			t.Fatal("the replaced cacerts files were not loaded")
		}
		if chain := issueVerified(t, iss, root.Certificate); !chain[1].Equal(second.Certificate) {
			t.Error("leaves are not signed by the new intermediate")
		}
		if !strings.Contains(logs.String(), "plugged intermediate CA reloaded") {
			t.Error("the reload was not logged")
		}
		assertNoSecrets(t, logs.String())
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

// TestPluggedCAWarnsBeforeExpiry: once less than MinRemaining is left,
// an error is logged once (meshca cannot renew the intermediate).
func TestPluggedCAWarnsBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		root, _ := testkit.IstioRoot(t, "plugged-root", "cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
		inter := testkit.IstioIntermediate(t, root, "plugged-first", now.Add(-time.Hour), now.Add(25*time.Hour))
		files := testkit.WriteCACerts(t, t.TempDir(), inter, root.Certificate)
		log, logs := captureLogs(t)
		p, err := issuer.NewPluggedCA(issuer.PluggedCAConfig{Files: files, Logger: log, PollInterval: time.Hour}, now)
		if err != nil {
			t.Fatal(err)
		}
		iss := pluggedIssuer(t, p)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = p.Run(ctx, iss) }()
		time.Sleep(90 * time.Minute)
		synctest.Wait()
		if strings.Contains(logs.String(), "expires soon") {
			t.Fatal("warned with more than a day left")
		}
		time.Sleep(4 * time.Hour)
		synctest.Wait()
		if n := strings.Count(logs.String(), "expires soon"); n != 1 {
			t.Errorf("warned %d times, want once", n)
		}
	})
}

// TestPluggedCARefusedByIssuer: an intermediate whose URI name constraints
// leave out the trust domain is refused, and without ExternalCA an
// unconstrained intermediate is refused as before.
func TestPluggedCARefusedByIssuer(t *testing.T) {
	now := time.Now()
	root := testkit.Root(t, "plugged-nc-root", now.Add(-time.Hour), 1000*time.Hour)
	key := testkit.Key(t, "plugged-nc")
	other, err := root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: key.Public(), TrustDomain: spiffeid.RequireTrustDomainFromString("other.example"), Cluster: "x", Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(other, key)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := trust.NewBundle(root.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	cfg := issuer.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev", ExternalCA: true,
		Authority: a, Bundle: bundle, Attestor: &fakeAttestor{}, Recorder: &fakeRecorder{},
	}
	if _, err := issuer.New(cfg); err == nil || !strings.Contains(err.Error(), "does not permit SPIFFE IDs of trust domain") {
		t.Errorf("New(intermediate for other.example) = %v, want a name-constraint error", err)
	}

	inter := testkit.IstioIntermediate(t, root, "plugged-first", now.Add(-time.Hour), now.Add(100*time.Hour))
	cfg.Authority, cfg.ExternalCA = inter, false
	if _, err := issuer.New(cfg); err == nil {
		t.Error("an unconstrained intermediate was accepted without ExternalCA")
	}
	cfg.ExternalCA = true
	if _, err := issuer.New(cfg); err != nil {
		t.Errorf("New(Istio-shaped intermediate, ExternalCA) = %v", err)
	}
}

// TestCRLSignerSkipsCAsWithoutCRLSign: a held CA whose key usage lacks CRL
// signing (Istio's tools/certs intermediate, istiod's root) signs no CRL,
// is logged once, and does not stop the CRLs of those that may.
func TestCRLSignerSkipsCAsWithoutCRLSign(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		root, _ := testkit.IstioRoot(t, "plugged-root", "cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
		inter := testkit.IstioIntermediate(t, root, "plugged-first", now.Add(-time.Hour), now.Add(90*24*time.Hour))
		files := testkit.WriteCACerts(t, t.TempDir(), inter, root.Certificate)
		log, logs := captureLogs(t)
		p, err := issuer.NewPluggedCA(issuer.PluggedCAConfig{Files: files, Logger: log}, now)
		if err != nil {
			t.Fatal(err)
		}
		iss := pluggedIssuer(t, p)
		db := &memStore{}
		dl := newDenyList(t, db, log)
		// A root that may sign CRLs beside the plugged intermediate that may not.
		crlRoot := testkit.Root(t, "plugged-crl-root", now.Add(-time.Hour), 1000*time.Hour)
		signer, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{
			Issuer: iss, DenyList: dl, Store: db, Root: issuer.FixedCA(crlRoot), Jitter: func() float64 { return 0.5 }, Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		runInBackground(t, "DenyList.Run", dl.Run)
		runInBackground(t, "CRLSigner.Run", signer.Run)
		synctest.Wait()
		time.Sleep(48 * time.Hour) // several re-signings
		synctest.Wait()
		crls, _ := signer.Current()
		if len(crls) != 1 {
			t.Fatalf("%d CRLs, want the CRL-signing root's alone", len(crls))
		}
		rl, err := x509.ParseRevocationList(crls[0].DER)
		if err != nil || rl.CheckSignatureFrom(crlRoot.Certificate) != nil {
			t.Errorf("the CRL is not the root's: %v", err)
		}
		if n := strings.Count(logs.String(), "does not allow signing CRLs"); n != 1 {
			t.Errorf("the intermediate without CRL signing was logged %d times, want once", n)
		}
		if strings.Contains(logs.String(), "signing a CRL failed") {
			t.Error("the signer tried to sign a CRL with the intermediate")
		}
	})
}
