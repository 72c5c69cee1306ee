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
	"github.com/meshca/meshca/ca/catest"
)

func TestManagerSetTrustBundle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, func(c *ManagerConfig) { c.OutputDir = filepath.Join(filepath.Dir(c.TokenFile), "out") })
		fileRoot := f.tree.Root.Certificate
		newRoot, err := ca.NewRoot(ca.RootConfig{Signer: catest.Key(t, "manager-new-root"), CommonName: "new root"})
		if err != nil {
			t.Fatal(err)
		}
		fed := federatedRoot(t, "fed1")
		east := spiffeid.RequireTrustDomainFromString("east.example")
		bundle := func(seq uint64, own []*x509.Certificate, federated ...*x509.Certificate) *ca.TrustBundle {
			b := &ca.TrustBundle{Sequence: seq, Domains: []ca.DomainBundle{
				{TrustDomain: webID.TrustDomain(), Roots: mustBundle(t, own...)},
				// Another trust domain of the same root (another cluster).
				{TrustDomain: east, Roots: mustBundle(t, own...)},
			}}
			if len(federated) > 0 {
				b.Domains = append(b.Domains, ca.DomainBundle{TrustDomain: otherTD, Roots: mustBundle(t, federated...), Federated: true})
			}
			return b
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
		if written, err := pemutil.ReadCertificateBundle(filepath.Join(f.outDir, BundleFile)); err != nil || !sameCerts(written, fileRoot, newRoot.Certificate) {
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
		if _, err := f.mgr.SetTrustBundle(bundle(9, []*x509.Certificate{fileRoot})); !errors.Is(err, ErrStaleBundle) {
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
