package agent

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// upstreamTree is meshca under an upstream PKI: the upstream's root, a
// meshca CA it signed (path length 1), and a cluster intermediate under
// that CA whose chain carries the meshca CA.
type upstreamTree struct {
	upRoot, meshCA *ca.Authority
	tree           *testkit.Tree
}

func newUpstreamTree(t testing.TB, now time.Time) upstreamTree {
	t.Helper()
	upRoot := testkit.Root(t, "upstream-root", now, 100*24*time.Hour)
	meshCA := upstreamCA(t, upRoot, "meshca-ca", now)
	return upstreamTree{upRoot: upRoot, meshCA: meshCA, tree: &testkit.Tree{
		Root: meshCA, Intermediate: upstreamIntermediate(t, meshCA, "intermediate-upstream", now),
		Bundle: mustBundle(t, meshCA.Certificate), TrustDomain: webID.TrustDomain()}}
}

// upstreamCA is a CA the upstream root signs for key, named "meshca CA"
// and with room for one CA below it, as the upstream signs meshca's.
func upstreamCA(t testing.TB, upRoot *ca.Authority, key string, now time.Time) *ca.Authority {
	t.Helper()
	k := testkit.Key(t, key)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "meshca CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(60 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, upRoot.Certificate, k.Public(), upRoot.Signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(cert, k, upRoot.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// upstreamIntermediate is the intermediate of cluster "test" that parent
// signs for key; its chain carries parent.
func upstreamIntermediate(t testing.TB, parent *ca.Authority, key string, now time.Time) *ca.Authority {
	t.Helper()
	ikey := testkit.Key(t, key)
	icert, err := parent.SignIntermediate(ca.IntermediateRequest{PublicKey: ikey.Public(), TrustDomain: webID.TrustDomain(),
		Cluster: "test", ServingNames: testkit.TestServingNames, TTL: 30 * 24 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.NewAuthority(icert, ikey, parent.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return inter
}

// Under an upstream PKI workloads anchor on the upstream's root (SDS
// ROOTCA, the Workload API's bundle, bundle.pem) and their chains verify
// against it, while the issuer connection keeps trusting meshca's CA alone.
func TestManagerServesUpstreamRootToWorkloads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := newUpstreamTree(t, time.Now())
		dir := t.TempDir()
		fetcher := &fakeFetcher{tree: up.tree, id: webID, ttl: time.Hour}
		tokenFile, caFile, outDir := filepath.Join(dir, "token"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "out")
		writeTestFile(t, tokenFile, "token-1")
		writeTestFile(t, caFile, string(up.tree.Bundle.PEM()))
		pub := newPublisher()
		m, err := newManager(managerConfig{Fetcher: fetcher, Publisher: pub, TokenFile: tokenFile, CABundleFile: caFile,
			OutputDir: outDir, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		if _, err := m.Renew(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Before the bundle arrives the file's meshca CA is all the agent knows.
		if snap, _ := pub.Current(); !sameCerts(snap.Bundle().Roots(), up.meshCA.Certificate) {
			t.Error("before the trust bundle: ROOTCA is not the CA bundle file's CA")
		}

		b := &trust.TrustBundle{Sequence: 4, ActiveRoot: trust.Fingerprint(up.meshCA.Certificate), Domains: []trust.DomainBundle{{
			TrustDomain: webID.TrustDomain(), Roots: mustBundle(t, up.upRoot.Certificate), Authorities: mustBundle(t, up.meshCA.Certificate),
		}}}
		if _, err := m.SetTrustBundle(signedBy(t, b, up.meshCA)); err != nil {
			t.Fatal(err)
		}
		snap, _ := pub.Current()
		rootCA, err := pemutil.ParseCertificateBundle(snap.sdsBundle(ResourceRootCA).pem)
		if err != nil || !sameCerts(rootCA, up.upRoot.Certificate) {
			t.Errorf("SDS ROOTCA %d certificates (%v), want the upstream root alone", len(rootCA), err)
		}
		if string(snap.bundleDER) != string(up.upRoot.Certificate.Raw) {
			t.Error("the Workload API X.509 bundle is not the upstream root")
		}
		if !sameCerts(fetcher.lastRoots().Roots(), up.meshCA.Certificate) {
			t.Error("the issuer connection does not trust meshca's CA alone")
		}
		if written, err := pemutil.ReadCertificateBundle(filepath.Join(outDir, bundleFile)); err != nil || !sameCerts(written, up.upRoot.Certificate) {
			t.Errorf("bundle.pem is not the upstream root (%v)", err)
		}

		// The served chain verifies against the served anchor alone.
		verifyServedChain(t, snap, snap.Bundle())
		if _, err := m.Renew(context.Background()); err != nil {
			t.Fatal(err)
		}
		renewed, _ := pub.Current()
		if renewed.SVIDVersion() == snap.SVIDVersion() || renewed.BundleVersion() != snap.BundleVersion() {
			t.Error("a renewal changed the served anchors")
		}
		verifyServedChain(t, renewed, mustBundle(t, up.upRoot.Certificate))
	})
}

func verifyServedChain(t *testing.T, snap *snapshot, anchors *trust.Bundle) {
	t.Helper()
	chain := snap.SVID().Chain
	inters := x509.NewCertPool()
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: anchors.Pool(), Intermediates: inters, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Errorf("served chain does not verify against the upstream root: %v", err)
	}
}

// An issuer whose serving certificate chains to the upstream's root but not
// to a meshca CA is refused: the agent authenticates issuers against
// meshca's own CAs, never against the upstream root, which also vouches for
// CAs that are not meshca's.
func TestClientRefusesIssuerOnlyUnderUpstreamRoot(t *testing.T) {
	up := newUpstreamTree(t, time.Now())
	// An intermediate the upstream root signed itself: not under meshca's CA.
	ikey := testkit.Key(t, "intermediate-stranger")
	icert, err := up.upRoot.SignIntermediate(ca.IntermediateRequest{PublicKey: ikey.Public(), TrustDomain: webID.TrustDomain(),
		Cluster: "test", ServingNames: testkit.TestServingNames, TTL: 24 * time.Hour, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.NewAuthority(icert, ikey)
	if err != nil {
		t.Fatal(err)
	}
	stranger := &testkit.Tree{Root: up.upRoot, Intermediate: inter, Bundle: mustBundle(t, up.upRoot.Certificate), TrustDomain: webID.TrustDomain()}
	fi := newFakeIssuer(t, stranger, false)
	for _, tc := range []struct {
		name  string
		roots *trust.Bundle
		ok    bool
	}{
		{"meshca's CA", up.tree.Bundle, false},
		{"the upstream root", stranger.Bundle, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(ClientConfig{Address: fi.addr, Roots: tc.roots})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			_, err = c.Fetch(ctx, testkit.Key(t, "workload"), "token", time.Hour)
			if (err == nil) != tc.ok {
				t.Errorf("Fetch: %v, want success %v", err, tc.ok)
			}
		})
	}
}

// TestManagerRefusesOtherCAsOfTheUpstream: under an upstream PKI the
// bundle's Roots are the upstream's root, which vouches for every CA the
// upstream issues, not only meshca's. A CRL or a JWT authority signed
// under another CA the same upstream issued (named like meshca's, with a
// cluster intermediate for the trust domain below it) is refused: the
// agent checks them against meshca's own CAs (Authorities), and keeps the
// genuine ones.
func TestManagerRefusesOtherCAsOfTheUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		up := newUpstreamTree(t, now)
		rogueCA := upstreamCA(t, up.upRoot, "rogue-upstream-ca", now)
		rogue := &testkit.Tree{Root: rogueCA, Intermediate: upstreamIntermediate(t, rogueCA, "rogue-intermediate", now),
			Bundle: mustBundle(t, up.upRoot.Certificate), TrustDomain: webID.TrustDomain()}
		dir := t.TempDir()
		caFile := filepath.Join(dir, "ca.pem")
		writeTestFile(t, filepath.Join(dir, "token"), "token-1")
		writeTestFile(t, caFile, string(up.tree.Bundle.PEM()))
		reg := prometheus.NewRegistry()
		pub := newPublisher()
		m, err := newManager(managerConfig{Fetcher: &fakeFetcher{tree: up.tree, id: webID, ttl: time.Hour}, Publisher: pub,
			TokenFile: filepath.Join(dir, "token"), CABundleFile: caFile, OutputDir: filepath.Join(dir, "out"),
			Logger: discardLogger(), Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		if _, err := m.Renew(context.Background()); err != nil {
			t.Fatal(err)
		}

		genuineCA, genuineInter := signCRL(t, up.meshCA, 1, now, time.Hour, 5), signCRL(t, up.tree.Intermediate, 1, now, time.Hour, 6)
		rogueCACRL, rogueInterCRL := signCRL(t, rogueCA, 2, now, time.Hour), signCRL(t, rogue.Intermediate, 2, now, time.Hour)
		genuineJWT := newJWTKey(t, up.tree, time.Time{})
		rogueJWT := newJWTKey(t, rogue, time.Time{})
		// The rogue's chain reaches the upstream root: its intermediate,
		// then the rogue CA.
		rogueJWT.auth.Chain = append(rogueJWT.auth.Chain, rogueCA.Certificate.Raw)
		if err := trust.VerifyJWTAuthority(rogueJWT.auth, webID.TrustDomain(), mustBundle(t, up.upRoot.Certificate), now); err != nil {
			t.Fatalf("the rogue JWT authority does not even chain to the upstream root: %v", err)
		}

		b := &trust.TrustBundle{Sequence: 4, ActiveRoot: trust.Fingerprint(up.meshCA.Certificate), Domains: []trust.DomainBundle{{
			TrustDomain: webID.TrustDomain(), Roots: mustBundle(t, up.upRoot.Certificate), Authorities: mustBundle(t, up.meshCA.Certificate),
			CRLs:           []trust.CRL{genuineCA, genuineInter, rogueCACRL, rogueInterCRL},
			JWTAuthorities: []trust.JWTAuthority{genuineJWT.auth, rogueJWT.auth},
		}}}
		if _, err := m.SetTrustBundle(signedBy(t, b, up.meshCA)); err != nil {
			t.Fatal(err)
		}
		snap, _ := pub.Current()
		if !sameDERs(snap.CRLs(), genuineCA, genuineInter) {
			t.Errorf("the agent serves %d CRLs, want the 2 of meshca's CA and intermediate", len(snap.CRLs()))
		}
		if n := rejectedCRLs(t, reg, crlUntrusted); n != 2 {
			t.Errorf("untrusted CRLs counted %v, want 2 (the rogue CA's and its intermediate's)", n)
		}
		jwks := string(snap.JWTBundles()[webID.TrustDomain().IDString()])
		if !strings.Contains(jwks, genuineJWT.auth.KeyID) || strings.Contains(jwks, rogueJWT.auth.KeyID) {
			t.Errorf("JWT bundle %s: want the genuine key %s and not the rogue %s", jwks, genuineJWT.auth.KeyID, rogueJWT.auth.KeyID)
		}
		if v, _ := metricValue(t, reg, jwtRejectedMetricName, "reason", jwtInvalid); v != 1 {
			t.Errorf("%s{reason=invalid} = %v, want 1 (the rogue)", jwtRejectedMetricName, v)
		}
	})
}
