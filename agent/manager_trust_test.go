package agent

import (
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

func TestManagerSetTrustBundle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, func(c *managerConfig) { c.OutputDir = filepath.Join(filepath.Dir(c.TokenFile), "out") })
		fileRoot := f.tree.Root.Certificate
		newRoot, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "manager-new-root"), CommonName: "new root"})
		if err != nil {
			t.Fatal(err)
		}
		fed := federatedRoot(t, "fed1")
		east := spiffeid.RequireTrustDomainFromString("east.example")
		bundle := func(seq uint64, own []*x509.Certificate, federated ...*x509.Certificate) *trust.TrustBundle {
			b := &trust.TrustBundle{Sequence: seq, Domains: []trust.DomainBundle{
				{TrustDomain: webID.TrustDomain(), Roots: mustBundle(t, own...)},
				// Another trust domain of the same root (another cluster).
				{TrustDomain: east, Roots: mustBundle(t, own...)},
			}}
			if len(federated) > 0 {
				b.Domains = append(b.Domains, trust.DomainBundle{TrustDomain: otherTD, Roots: mustBundle(t, federated...), Federated: true})
			}
			// Signed by the root the agent trusts from its file, as the
			// root service signs what issuers relay.
			return signedBy(t, b, f.tree.Root)
		}
		before := f.current()
		_, changed := f.pub.Current()

		// A new own root and a federated domain: served at once, with the
		// same certificate, and trusted for the issuer.
		if ok, err := f.mgr.SetTrustBundle(bundle(10, []*x509.Certificate{fileRoot, newRoot.Certificate}, fed)); err != nil || !ok {
			t.Fatalf("SetTrustBundle: %v %v, want a change", ok, err)
		}
		select {
		case <-changed:
		default:
			t.Error("subscribers were not told")
		}
		snap := f.current()
		if snap.SVIDVersion() != before.SVIDVersion() {
			t.Error("the certificate changed")
		}
		if !sameCerts(snap.Bundle().Roots(), fileRoot, newRoot.Certificate) || !sameCerts(snap.SVID().Roots, fileRoot, newRoot.Certificate) {
			t.Error("the own bundle lacks the new root")
		}
		if d := snap.FederatedBundles(); len(d) != 2 || d[0].TrustDomain != east || d[1].TrustDomain != otherTD || !sameCerts(d[1].Roots.Roots(), fed) {
			t.Errorf("federated bundles %v, want east.example and other.example", d)
		}
		if !sameCerts(f.fetcher.lastRoots().Roots(), fileRoot, newRoot.Certificate) {
			t.Error("the issuer connection does not trust the new root")
		}
		if written, err := pemutil.ReadCertificateBundle(filepath.Join(f.outDir, bundleFile)); err != nil || !sameCerts(written, fileRoot, newRoot.Certificate) {
			t.Errorf("bundle.pem not rewritten with the new root (%v)", err)
		}
		if f.mgr.TrustBundleSequence() != 10 {
			t.Errorf("sequence %d, want 10", f.mgr.TrustBundleSequence())
		}

		// The same content under a newer sequence changes nothing served;
		// an older sequence is refused.
		if ok, err := f.mgr.SetTrustBundle(bundle(11, []*x509.Certificate{fileRoot, newRoot.Certificate}, fed)); err != nil || ok {
			t.Errorf("same content: %v %v, want no change", ok, err)
		}
		if _, err := f.mgr.SetTrustBundle(bundle(9, []*x509.Certificate{fileRoot})); !errors.Is(err, errStaleBundle) {
			t.Errorf("older bundle: %v, want ErrStaleBundle", err)
		}
		if f.mgr.TrustBundleSequence() != 11 || f.current().FederatedVersion() != snap.FederatedVersion() {
			t.Error("the older bundle was applied")
		}

		// Renewals keep the watched trust.
		time.Sleep(40 * time.Minute)
		renewed := f.current()
		if renewed.SVIDVersion() == snap.SVIDVersion() || renewed.BundleVersion() != snap.BundleVersion() || renewed.FederatedVersion() != snap.FederatedVersion() {
			t.Error("a renewal dropped the watched trust")
		}
		if !sameCerts(f.fetcher.lastRoots().Roots(), fileRoot, newRoot.Certificate) {
			t.Error("a renewal dropped the new root from the issuer connection")
		}

		// The new root alone, no federation: the file's root stays.
		if _, err := f.mgr.SetTrustBundle(bundle(12, []*x509.Certificate{newRoot.Certificate})); err != nil {
			t.Fatal(err)
		}
		last := f.current()
		if !sameCerts(last.Bundle().Roots(), fileRoot, newRoot.Certificate) || len(last.FederatedBundles()) != 1 {
			t.Errorf("after federation ended: %d own roots, %d other domains; want 2 and east.example", len(last.Bundle().Roots()), len(last.FederatedBundles()))
		}
		f.logs.waitFor(t, "trust bundle updated", `"sequence":12`)
	})
}

// signedBy signs b with signer and returns it.
func signedBy(t testing.TB, b *trust.TrustBundle, signer *ca.Authority) *trust.TrustBundle {
	t.Helper()
	if err := ca.SignTrustBundle(b, signer.Signer, signer.Certificate); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestManagerAcceptsOnlyVouchedTrust: the issuer only relays the root's
// bundle, so the agent takes new roots and trust domains only under the
// signature of a root it already trusts; unsigned bundles may only
// withdraw trust.
func TestManagerAcceptsOnlyVouchedTrust(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		fileRoot := f.tree.Root
		newRoot, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "vouch-new-root"), CommonName: "new root"})
		if err != nil {
			t.Fatal(err)
		}
		rogue, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "vouch-rogue-root"), CommonName: "rogue root"})
		if err != nil {
			t.Fatal(err)
		}
		fedRoot, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "vouch-fed-root"), CommonName: "federated root"})
		if err != nil {
			t.Fatal(err)
		}
		east := spiffeid.RequireTrustDomainFromString("east.example")
		seq := uint64(100)
		// bundle returns a new unsigned bundle: the own trust domain with
		// own, plus other domains.
		bundle := func(own []*x509.Certificate, others ...trust.DomainBundle) *trust.TrustBundle {
			seq++
			b := &trust.TrustBundle{Sequence: seq, Domains: []trust.DomainBundle{{TrustDomain: webID.TrustDomain(), Roots: mustBundle(t, own...)}}}
			b.Domains = append(b.Domains, others...)
			return b
		}
		fed := trust.DomainBundle{TrustDomain: otherTD, Roots: mustBundle(t, fedRoot.Certificate), Federated: true}
		file := []*x509.Certificate{fileRoot.Certificate}
		both := []*x509.Certificate{fileRoot.Certificate, newRoot.Certificate}

		wantRejected := func(name string, b *trust.TrustBundle) {
			t.Helper()
			beforeSeq, before := f.mgr.TrustBundleSequence(), f.current()
			beforeRoots := f.fetcher.lastRoots()
			if _, err := f.mgr.SetTrustBundle(b); !errors.Is(err, errUntrustedBundle) {
				t.Errorf("%s: %v, want ErrUntrustedBundle", name, err)
			}
			after := f.current()
			if f.mgr.TrustBundleSequence() != beforeSeq || after.BundleVersion() != before.BundleVersion() ||
				after.FederatedVersion() != before.FederatedVersion() || f.fetcher.lastRoots() != beforeRoots {
				t.Errorf("%s: the rejected bundle changed the agent's trust", name)
			}
		}
		wantAccepted := func(name string, b *trust.TrustBundle) {
			t.Helper()
			if _, err := f.mgr.SetTrustBundle(b); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if f.mgr.TrustBundleSequence() != b.Sequence {
				t.Fatalf("%s: holding %d, want %d", name, f.mgr.TrustBundleSequence(), b.Sequence)
			}
		}

		// Unsigned: only what the agent already trusts.
		wantRejected("unsigned, adds a root", bundle(both))
		wantRejected("unsigned, adds a federated domain", bundle(file, fed))
		wantRejected("unsigned, adds another trust domain", bundle(file, trust.DomainBundle{TrustDomain: east, Roots: mustBundle(t, file...)}))
		wantRejected("unsigned, federated root", bundle(file, trust.DomainBundle{TrustDomain: otherTD, Roots: mustBundle(t, file...), Federated: true}))
		wantAccepted("unsigned, adds nothing", bundle(file))

		// Signed: only by a root the agent trusts, over what it carries.
		wantRejected("signed by an unknown root", signedBy(t, bundle([]*x509.Certificate{fileRoot.Certificate, rogue.Certificate}), rogue))
		tampered := signedBy(t, bundle(file), fileRoot)
		tampered.Domains = append(tampered.Domains, fed)
		wantRejected("signed, then a federated domain added", tampered)
		tampered = signedBy(t, bundle(file), fileRoot)
		tampered.Domains[0].Roots = mustBundle(t, both...)
		wantRejected("signed, then a root added", tampered)

		// A trusted root vouches for a new root and a federated domain.
		wantAccepted("signed by the file's root", signedBy(t, bundle(both, fed, trust.DomainBundle{TrustDomain: east, Roots: mustBundle(t, both...)}), fileRoot))
		snap := f.current()
		if !sameCerts(snap.Bundle().Roots(), both...) || len(snap.FederatedBundles()) != 2 {
			t.Fatalf("after the signed bundle: %d own roots and %d other domains, want 2 and 2", len(snap.Bundle().Roots()), len(snap.FederatedBundles()))
		}
		if !sameCerts(f.fetcher.lastRoots().Roots(), both...) {
			t.Error("the issuer connection does not trust the new root")
		}
		// The new root, learnt from that bundle, vouches for the next one
		// (a root rotation); a federated root vouches for nothing.
		wantAccepted("signed by the new root", signedBy(t, bundle([]*x509.Certificate{newRoot.Certificate}, fed), newRoot))
		wantRejected("signed by a federated root", signedBy(t, bundle(both, fed), fedRoot))

		// Once a root has vouched, unsigned bundles are refused outright:
		// not even a withdrawal (it could carry a huge sequence and make
		// every genuine bundle after it look stale).
		wantRejected("unsigned after signed, federation withdrawn", bundle([]*x509.Certificate{newRoot.Certificate}))
		if n := len(f.current().FederatedBundles()); n != 1 {
			t.Errorf("%d other domains after a refused unsigned bundle, want the 1 held", n)
		}
		wantAccepted("signed, federation withdrawn", signedBy(t, bundle([]*x509.Certificate{newRoot.Certificate}), newRoot))
		if n := len(f.current().FederatedBundles()); n != 0 {
			t.Errorf("%d other domains after withdrawal, want none", n)
		}
	})
}
