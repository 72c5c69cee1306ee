package trust_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// TestTrustBundleCrossSigned: cross certificates travel on the wire, count
// for Equal, stay outside the signature (like CRLs), and OwnRoots keeps
// only those that link two own roots, never one naming a federated root.
func TestTrustBundleCrossSigned(t *testing.T) {
	now := time.Now()
	oldRoot := testkit.Root(t, "trust-cross-old", now.Add(-time.Hour), 24*time.Hour)
	newRoot := testkit.Root(t, "trust-cross-new", now, 48*time.Hour)
	fedRoot := testkit.Root(t, "trust-cross-fed", now, 48*time.Hour)
	cross := func(signer, subject *ca.Authority) *x509.Certificate {
		c, err := signer.CrossSign(ca.CrossRequest{Subject: subject.Certificate, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	newByOld, oldByNew, fedByOld := cross(oldRoot, newRoot), cross(newRoot, oldRoot), cross(oldRoot, fedRoot)
	b := &trust.TrustBundle{
		Sequence: 3, ActiveRoot: trust.Fingerprint(oldRoot.Certificate),
		Domains: []trust.DomainBundle{
			{TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Roots: mustBundle(t, oldRoot.Certificate, newRoot.Certificate)},
			{TrustDomain: spiffeid.RequireTrustDomainFromString("partner.example"), Roots: mustBundle(t, fedRoot.Certificate), Federated: true},
		},
	}
	if err := ca.SignTrustBundle(b, oldRoot.Signer, oldRoot.Certificate); err != nil {
		t.Fatal(err)
	}
	withCross := *b
	withCross.CrossSigned = []*x509.Certificate{newByOld, oldByNew, fedByOld}
	if withCross.Equal(b) {
		t.Error("Equal ignores cross certificates")
	}
	if err := withCross.VerifySignature(mustBundle(t, oldRoot.Certificate), now); err != nil {
		t.Errorf("adding cross certificates breaks the signature: %v", err)
	}
	got, err := trust.TrustBundleFromProto(withCross.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(&withCross) || len(got.CrossSigned) != 3 {
		t.Fatalf("wire round trip kept %d cross certificates, want 3", len(got.CrossSigned))
	}
	links := got.OwnRoots().CrossSigned()
	if len(links) != 2 {
		t.Fatalf("OwnRoots kept %d cross certificates, want the two between own roots", len(links))
	}
	for _, l := range links {
		if l.Subject.Equal(fedRoot.Certificate) || l.Issuer.Equal(fedRoot.Certificate) {
			t.Error("OwnRoots kept a cross certificate naming a federated root")
		}
	}
	bad := withCross.ToProto()
	bad.CrossCertificates = append(bad.CrossCertificates, []byte("not a certificate"))
	if _, err := trust.TrustBundleFromProto(bad); err == nil {
		t.Error("a bundle with an unparsable cross certificate was accepted")
	}
}
