package issuer_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/root/roottest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// nextUntil receives bundles until one satisfies cond.
func nextUntil(t *testing.T, next func() *trust.TrustBundle, what string, cond func(*trust.TrustBundle) error) *trust.TrustBundle {
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
func crlOf(tb *trust.TrustBundle, td spiffeid.TrustDomain, cert *x509.Certificate) (trust.CRL, bool) {
	d, _ := tb.Domain(td)
	for _, c := range d.CRLs {
		if len(c.IssuerChain) > 0 && bytes.Equal(c.IssuerChain[0], cert.Raw) {
			return c, true
		}
	}
	return trust.CRL{}, false
}

// verifiedCRL verifies c against roots now.
func verifiedCRL(t *testing.T, c trust.CRL, roots *trust.Bundle) *x509.RevocationList {
	t.Helper()
	rl, _, err := trust.VerifyCRL(c, roots, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

// gatedPublisher hands CRLs to the root only while open; closed, it fails
// as an unreachable root does, so the root keeps republishing what it had.
type gatedPublisher struct {
	to   issuer.CRLPublisher
	open atomic.Bool
}

var _ issuer.CRLPublisher = (*gatedPublisher)(nil)

func (p *gatedPublisher) PublishCRLs(ctx context.Context, crls []trust.CRL) error {
	if !p.open.Load() {
		return errors.New("root unreachable")
	}
	return p.to.PublishCRLs(ctx, crls)
}

func TestIssuerRelaysBundleWithItsCRLs(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	initial := r.Roots()
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), tok, log))
	if err := up.PublishCRLs(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Errorf("PublishCRLs before enrolment: %v, want an error", err)
	}
	a, tb := mustIntermediate(t, up)
	td := up.TrustDomain()

	// The root's bundle carries its own CRL and an older copy of this
	// issuer's, as the root republishes what issuers publish.
	staleOwn, _, err := a.SignCRL(ca.CRLRequest{Number: big.NewInt(1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.PublishCRLs(t.Context(), []trust.CRL{staleOwn}); err != nil {
		t.Fatal(err)
	}
	// relayed are the issuer CRLs the root republishes in td, after its own.
	relayed := func() []trust.CRL {
		d, _ := r.Bundle().Domain(td)
		return d.CRLs[1:]
	}
	testkit.Eventually(t, 10*time.Second, "the root relays the older CRL", func() error {
		if !slices.EqualFunc(relayed(), []trust.CRL{staleOwn}, crlEqual) {
			return errNotYet
		}
		return nil
	})
	d, _ := r.Bundle().Domain(td)
	rootCRL := d.CRLs[0]

	// The issuer's own publications reach the root only while the gate is
	// open, so that what the root relays stays known.
	gate := &gatedPublisher{to: up}
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
		Issuer: iss, DenyList: dl, Store: db, Publisher: gate, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	loop := runIntermediates(t, iss, up, tb, log)
	runInBackground(t, "DenyList.Run", dl.Run)
	runInBackground(t, "CRLSigner.Run", signer.Run)
	agent := bundleClient(t, serveIssuerConfig(t, issuer.ServerConfig{Issuer: iss, Bundles: loop, CRLs: signer}), tb.OwnRoots().Pool())
	next := watchBundles(t, agent, 0)

	rootBundle := r.Bundle()
	got := nextUntil(t, next, "the root's bundle with the issuer's CRL", func(b *trust.TrustBundle) error {
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
	if err := got.VerifySignature(initial, time.Now()); err != nil {
		t.Fatalf("relayed bundle with CRLs: %v", err)
	}
	d, _ = got.Domain(td)
	if len(d.CRLs) != 2 || !bytes.Equal(d.CRLs[0].DER, rootCRL.DER) {
		t.Fatalf("%d CRLs in %s, want the root's, then the issuer's newest (the older copy replaced)", len(d.CRLs), td)
	}
	own, _ := crlOf(got, td, a.Certificate)
	first := verifiedCRL(t, own, got.OwnRoots())
	if first.Number.Cmp(big.NewInt(1)) <= 0 || len(first.RevokedCertificateEntries) != 0 {
		t.Errorf("the issuer's CRL has number %v and %d entries, want a newer, empty one", first.Number, len(first.RevokedCertificateEntries))
	}
	gate.open.Store(true)
	testkit.Eventually(t, 10*time.Second, "the root receives the issuer's CRLs", func() error {
		current, _ := signer.Current()
		if !slices.EqualFunc(relayed(), current, crlEqual) {
			return errNotYet
		}
		return nil
	})
	gate.open.Store(false)
	// The root republished under a new sequence: watchers get that first.
	got = nextUntil(t, next, "the root's bundle with the issuer's current CRL", func(b *trust.TrustBundle) error {
		if b.Sequence != r.Bundle().Sequence {
			return fmt.Errorf("bundle %d, not the root's current one", b.Sequence)
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
	if err := revoked.VerifySignature(initial, time.Now()); err != nil {
		t.Errorf("bundle with new CRLs: %v", err)
	}
	// A watcher that already holds the sequence gets it at once: its CRLs
	// may be older.
	if again := watchBundles(t, agent, got.Sequence)(); again.Sequence != got.Sequence || !again.Equal(revoked) {
		t.Error("a reconnecting watcher did not get the current CRLs")
	}
	gate.open.Store(true)
	testkit.Eventually(t, 10*time.Second, "the root receives the new CRLs", func() error {
		current, _ := signer.Current()
		if !slices.EqualFunc(relayed(), current, crlEqual) {
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
	got := nextUntil(t, next, "the issuer's CRL", func(b *trust.TrustBundle) error {
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
	db.revoke(store.RevokeSerial, trust.SerialHex(chain[0].SerialNumber), "dev")
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
