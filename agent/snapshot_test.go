package agent

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

func TestPublisher(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	p := newPublisher()
	empty, changed := p.Current()
	if empty.SVID() != nil || empty.Bundle() != nil || empty.Valid(time.Now()) {
		t.Fatal("a new publisher holds something")
	}
	svid := newSVID(t, tree, webID, time.Hour)
	first := mustSnapshot(t, svid, tree.Bundle)
	if !p.Publish(first) {
		t.Fatal("first publish reported no change")
	}
	select {
	case <-changed:
	default:
		t.Fatal("subscribers not woken")
	}
	_, changed = p.Current()
	// The same certificate and bundle again: no wake-up.
	if p.Publish(mustSnapshot(t, svid, tree.Bundle)) {
		t.Error("publishing identical content reported a change")
	}
	select {
	case <-changed:
		t.Error("identical content woke subscribers")
	default:
	}
	// Only the bundle changes.
	bundle, _ := otherRoot(t, tree)
	second := mustSnapshot(t, svid, bundle)
	if !p.Publish(second) || second.SVIDVersion() != first.SVIDVersion() || second.BundleVersion() == first.BundleVersion() {
		t.Errorf("bundle change: versions %s/%s -> %s/%s", first.SVIDVersion(), first.BundleVersion(), second.SVIDVersion(), second.BundleVersion())
	}
	if cur, _ := p.Current(); cur != second || cur.ID() != webID {
		t.Error("Current is not the last published snapshot")
	}
}

func TestNewSnapshot(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	svid := newSVID(t, tree, webID, time.Hour)
	if _, err := newSnapshot(svid, nil); err == nil {
		t.Error("SVID without a bundle accepted")
	}
	noURI := *svid
	leaf := *svid.Chain[0]
	leaf.URIs = nil
	noURI.Chain = append([]*x509.Certificate{&leaf}, svid.Chain[1:]...)
	if _, err := newSnapshot(&noURI, tree.Bundle); err == nil {
		t.Error("leaf without a SPIFFE ID accepted")
	}
	s := mustSnapshot(t, svid, tree.Bundle)
	if !s.Valid(svid.Chain[0].NotAfter.Add(-time.Nanosecond)) || s.Valid(svid.Chain[0].NotAfter) {
		t.Error("Valid does not end exactly at NotAfter")
	}
	if s.SVIDVersion() != serialOf(svid.Chain[0]) {
		t.Errorf("SVID version %q, want the serial", s.SVIDVersion())
	}
}

func TestFederatedSnapshot(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	svid := newSVID(t, tree, webID, time.Hour)
	fed1, fed2 := federatedRoot(t, "fed1"), federatedRoot(t, "fed2")
	domains := func(roots ...*x509.Certificate) []trust.DomainBundle {
		return []trust.DomainBundle{
			{TrustDomain: otherTD, Roots: mustBundle(t, roots...), Federated: true},
			// The agent's own trust domain, as the root lists it: the
			// snapshot's own bundle wins.
			{TrustDomain: webID.TrustDomain(), Roots: mustBundle(t, fed1)},
		}
	}
	s := mustFederatedSnapshot(t, svid, tree.Bundle, domains(fed1))
	if got := s.FederatedBundles(); len(got) != 1 || got[0].TrustDomain != otherTD {
		t.Fatalf("federated bundles %v, want only other.example", got)
	}
	if !sameCerts(s.Bundle().Roots(), tree.Root.Certificate) {
		t.Error("own bundle replaced by the trust bundle's entry for the own trust domain")
	}
	if string(s.federated["spiffe://other.example"]) != string(fed1.Raw) {
		t.Error("federated DER not keyed by trust domain ID")
	}
	plain := mustSnapshot(t, svid, tree.Bundle)
	if s.BundleVersion() != plain.BundleVersion() || s.FederatedVersion() == "" || plain.FederatedVersion() != "" {
		t.Errorf("versions: own %s vs %s, federated %q vs %q", s.BundleVersion(), plain.BundleVersion(), s.FederatedVersion(), plain.FederatedVersion())
	}

	p := newPublisher()
	p.Publish(s)
	if p.Publish(mustFederatedSnapshot(t, svid, tree.Bundle, domains(fed1))) {
		t.Error("the same federated bundles reported a change")
	}
	changed := mustFederatedSnapshot(t, svid, tree.Bundle, domains(fed1, fed2))
	if !p.Publish(changed) || changed.FederatedVersion() == s.FederatedVersion() || changed.BundleVersion() != s.BundleVersion() {
		t.Error("a new federated root did not change the federated version alone")
	}
	if !p.Publish(plain) {
		t.Error("federation ending reported no change")
	}

	// Before the SVID the own trust domain is unknown: every domain is kept.
	early := mustFederatedSnapshot(t, nil, tree.Bundle, domains(fed1))
	if n := len(early.FederatedBundles()); n != 2 {
		t.Errorf("without an SVID: %d domains, want 2", n)
	}
	dup := []trust.DomainBundle{{TrustDomain: otherTD, Roots: mustBundle(t, fed1)}, {TrustDomain: otherTD, Roots: mustBundle(t, fed2)}}
	if _, err := newFederatedSnapshot(svid, tree.Bundle, dup); err == nil {
		t.Error("a trust domain listed twice was accepted")
	}
}

func mustFederatedSnapshot(t testing.TB, svid *SVID, b *trust.Bundle, domains []trust.DomainBundle) *snapshot {
	t.Helper()
	s, err := newFederatedSnapshot(svid, b, domains)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustBundle(t testing.TB, roots ...*x509.Certificate) *trust.Bundle {
	t.Helper()
	b, err := trust.NewBundle(roots...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
