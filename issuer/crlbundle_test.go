package issuer_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
)

// nextUntil receives bundles until one satisfies cond.
func nextUntil(t *testing.T, next func() *ca.TrustBundle, what string, cond func(*ca.TrustBundle) error) *ca.TrustBundle {
	t.Helper()
	var err error
	for range 50 {
		tb := next()
		if err = cond(tb); err == nil {
			return tb
		}
	}
	t.Fatalf("%s: %v", what, err)
	return nil
}

// crlOf returns the CRL of td's entry whose issuer is cert.
func crlOf(tb *ca.TrustBundle, td spiffeid.TrustDomain, cert *x509.Certificate) (ca.CRL, bool) {
	d, _ := tb.Domain(td)
	for _, c := range d.CRLs {
		if len(c.IssuerChain) > 0 && bytes.Equal(c.IssuerChain[0], cert.Raw) {
			return c, true
		}
	}
	return ca.CRL{}, false
}

// verifiedCRL verifies c against roots now.
func verifiedCRL(t *testing.T, c ca.CRL, roots *ca.Bundle) *x509.RevocationList {
	t.Helper()
	rl, _, err := ca.VerifyCRL(c, roots, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

func TestIssuerRelaysBundleWithItsCRLs(t *testing.T) {
	r := newFakeRoot(t, nil, time.Hour)
	tok := r.addCluster("east", "east.example")
	r.serve()
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), tok, log))
	if err := up.PublishCRLs(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Errorf("PublishCRLs before enrolment: %v, want an error", err)
	}
	a, tb := mustIntermediate(t, up)
	td := up.TrustDomain()

	// The root's bundle carries its own CRL and an older copy of this
	// issuer's, as the root republishes what issuers publish.
	rootCRL, _, err := r.activeRoot().SignCRL(ca.CRLRequest{Number: big.NewInt(7)})
	if err != nil {
		t.Fatal(err)
	}
	staleOwn, _, err := a.SignCRL(ca.CRLRequest{Number: big.NewInt(1)})
	if err != nil {
		t.Fatal(err)
	}
	r.setCRLs(td.Name(), rootCRL, staleOwn)

	db := &memStore{}
	dl, err := issuer.NewDenyList(issuer.DenyListConfig{Store: db, Cluster: up.Cluster(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: td, Cluster: up.Cluster(), Authority: a, Bundle: tb.OwnRoots(),
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}, watchToken: watcher}},
		Recorder: db, DenyList: dl, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{
		Issuer: iss, DenyList: dl, Store: db, Publisher: up, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	loop, err := issuer.NewIntermediates(issuer.IntermediatesConfig{
		Issuer: iss, Root: up, Bundle: tb, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "Intermediates.Run", loop.Run)
	runInBackground(t, "DenyList.Run", dl.Run)
	runInBackground(t, "CRLSigner.Run", signer.Run)
	agent := bundleClient(t, serveIssuerConfig(t, issuer.ServerConfig{Issuer: iss, Bundles: loop, CRLs: signer}), tb.OwnRoots().Pool())
	next := watchBundles(t, agent, 0)

	rootBundle := r.bundle()
	got := nextUntil(t, next, "the root's bundle with the issuer's CRL", func(b *ca.TrustBundle) error {
		own, ok := crlOf(b, td, a.Certificate)
		if b.Sequence != rootBundle.Sequence || !ok || bytes.Equal(own.DER, staleOwn.DER) {
			return fmt.Errorf("bundle %d without the issuer's current CRL", b.Sequence)
		}
		return nil
	})
	// The root's signature covers everything but the CRLs: it still
	// verifies, and agents can check it.
	if got.Signer != rootBundle.Signer || !got.IsSigned() {
		t.Error("the relayed bundle does not carry the root's signature")
	}
	if err := got.VerifySignature(r.initialRoots(), time.Now()); err != nil {
		t.Fatalf("relayed bundle with CRLs: %v", err)
	}
	d, _ := got.Domain(td)
	if len(d.CRLs) != 2 || !bytes.Equal(d.CRLs[0].DER, rootCRL.DER) {
		t.Fatalf("%d CRLs in %s, want the root's, then the issuer's newest (the older copy replaced)", len(d.CRLs), td)
	}
	own, _ := crlOf(got, td, a.Certificate)
	first := verifiedCRL(t, own, got.OwnRoots())
	if first.Number.Cmp(big.NewInt(1)) <= 0 || len(first.RevokedCertificateEntries) != 0 {
		t.Errorf("the issuer's CRL has number %v and %d entries, want a newer, empty one", first.Number, len(first.RevokedCertificateEntries))
	}
	testkit.Eventually(t, 10*time.Second, "the root receives the issuer's CRLs", func() error {
		current, _ := signer.Current()
		if !slices.EqualFunc(r.publishedCRLs("east"), current, crlEqual) {
			return errNotYet
		}
		return nil
	})

	// A revocation alone changes only the CRLs: watchers get the bundle
	// again under the same sequence.
	chain, err := iss.Issue(t.Context(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatal(err)
	}
	db.revoke(store.RevokeSPIFFEID, webIDIn(td), "")
	if err := dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	revoked := next()
	own, _ = crlOf(revoked, td, a.Certificate)
	rl := verifiedCRL(t, own, revoked.OwnRoots())
	if revoked.Sequence != got.Sequence || !slices.Equal(revokedSerials(rl), serialsOf(chain[0])) || rl.Number.Cmp(first.Number) <= 0 {
		t.Fatalf("after the revocation: bundle %d listing %v (number %v), want %d listing %v", revoked.Sequence,
			revokedSerials(rl), rl.Number, got.Sequence, serialsOf(chain[0]))
	}
	if err := revoked.VerifySignature(r.initialRoots(), time.Now()); err != nil {
		t.Errorf("bundle with new CRLs: %v", err)
	}
	// A watcher that already holds the sequence gets it at once: its CRLs
	// may be older.
	if again := watchBundles(t, agent, got.Sequence)(); again.Sequence != got.Sequence || !again.Equal(revoked) {
		t.Error("a reconnecting watcher did not get the current CRLs")
	}
	testkit.Eventually(t, 10*time.Second, "the root receives the new CRLs", func() error {
		current, _ := signer.Current()
		if !slices.EqualFunc(r.publishedCRLs("east"), current, crlEqual) {
			return errNotYet
		}
		return nil
	})
	assertNoSecrets(t, logs.String(), tok)
}

func webIDIn(td spiffeid.TrustDomain) string { return "spiffe://" + td.Name() + "/ns/default/sa/web" }

func TestIssuerServesItsCRLsWithItsOwnBundle(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	db := &memStore{}
	log := slog.New(slog.DiscardHandler)
	dl := newDenyList(t, db, log)
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}, watchToken: watcher}},
		Recorder: db, DenyList: dl, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{Issuer: iss, DenyList: dl, Store: db, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "DenyList.Run", dl.Run)
	runInBackground(t, "CRLSigner.Run", signer.Run)
	agent := bundleClient(t, serveIssuerConfig(t, issuer.ServerConfig{Issuer: iss, CRLs: signer}), tree.Bundle.Pool())
	next := watchBundles(t, agent, 0)
	got := nextUntil(t, next, "the issuer's CRL", func(b *ca.TrustBundle) error {
		if _, ok := crlOf(b, tree.TrustDomain, tree.Intermediate.Certificate); !ok {
			return fmt.Errorf("bundle %d without it", b.Sequence)
		}
		return nil
	})
	own, _ := crlOf(got, tree.TrustDomain, tree.Intermediate.Certificate)
	verifiedCRL(t, own, tree.Bundle)
	if got.IsSigned() || got.Sequence != uint64(tree.Root.Certificate.NotBefore.UnixMilli()) {
		t.Errorf("bundle %d (signed %v), want the issuer's own unsigned bundle", got.Sequence, got.IsSigned())
	}

	chain, err := iss.Issue(t.Context(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatal(err)
	}
	db.revoke(store.RevokeSerial, ca.SerialHex(chain[0].SerialNumber), "dev")
	if err := dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	revoked := next()
	own, _ = crlOf(revoked, tree.TrustDomain, tree.Intermediate.Certificate)
	if rl := verifiedCRL(t, own, tree.Bundle); revoked.Sequence != got.Sequence || !slices.Equal(revokedSerials(rl), serialsOf(chain[0])) {
		t.Errorf("after revoking a serial: bundle %d listing %v, want %d listing %v", revoked.Sequence, revokedSerials(rl),
			got.Sequence, serialsOf(chain[0]))
	}
}
