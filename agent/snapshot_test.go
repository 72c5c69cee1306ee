package agent

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/meshca/meshca/ca/catest"
)

func TestPublisher(t *testing.T) {
	tree := catest.New(t, catest.Options{})
	p := NewPublisher()
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
	tree := catest.New(t, catest.Options{})
	svid := newSVID(t, tree, webID, time.Hour)
	if _, err := NewSnapshot(svid, nil); err == nil {
		t.Error("SVID without a bundle accepted")
	}
	noURI := *svid
	leaf := *svid.Chain[0]
	leaf.URIs = nil
	noURI.Chain = append([]*x509.Certificate{&leaf}, svid.Chain[1:]...)
	if _, err := NewSnapshot(&noURI, tree.Bundle); err == nil {
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
