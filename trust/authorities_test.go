package trust_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// TestUpstreamAuthorities: a bundle whose meshca CAs are not its roots
// keeps them apart through the wire, covers them and the upstream chain
// with its signature, and accepts as signer only a meshca CA the receiver
// trusts that chains to the bundle's roots.
func TestUpstreamAuthorities(t *testing.T) {
	now := time.Now()
	upRoot := testkit.Root(t, "upstream-root", now, 100*24*time.Hour)
	meshCA := testkit.UpstreamCA(t, upRoot, "meshca-ca", 1, now)
	other := testkit.UpstreamCA(t, upRoot, "other-ca", 1, now)
	td := spiffeid.RequireTrustDomainFromString("east.example")
	b := &trust.TrustBundle{Sequence: 3, ActiveRoot: trust.Fingerprint(meshCA.Certificate), Domains: []trust.DomainBundle{{
		TrustDomain: td, Roots: mustBundle(t, upRoot.Certificate), Authorities: mustBundle(t, meshCA.Certificate),
	}}}
	if err := ca.SignTrustBundle(b, meshCA.Signer, meshCA.Certificate); err != nil {
		t.Fatal(err)
	}
	rt, err := trust.TrustBundleFromProto(b.ToProto())
	if err != nil || !rt.Equal(b) || !bytes.Equal(rt.Digest(), b.Digest()) {
		t.Fatalf("round trip: %v", err)
	}
	if got := rt.OwnAuthorities().Roots(); len(got) != 1 || !got[0].Equal(meshCA.Certificate) {
		t.Fatal("OwnAuthorities is not meshca's CA")
	}
	if got := rt.OwnRoots().Roots(); len(got) != 1 || !got[0].Equal(upRoot.Certificate) {
		t.Fatal("OwnRoots is not the upstream root")
	}
	if err := rt.VerifySignature(rt.OwnAuthorities(), now); err != nil {
		t.Fatalf("signed by meshca's CA: %v", err)
	}
	// The upstream root as the trusted set: the signer is not in it.
	if err := rt.VerifySignature(rt.OwnRoots(), now); !errors.Is(err, trust.ErrUntrustedSigner) {
		t.Fatalf("trusting the upstream root only: %v", err)
	}

	// Swapping the authorities or the chain breaks the signature.
	swapped := *rt
	swapped.Domains = []trust.DomainBundle{rt.Domains[0]}
	swapped.Domains[0].Authorities = mustBundle(t, meshCA.Certificate, other.Certificate)
	if err := swapped.VerifySignature(rt.OwnAuthorities(), now); !errors.Is(err, trust.ErrBadSignature) {
		t.Fatalf("authorities added after signing: %v", err)
	}
	swapped.Domains[0].Authorities = rt.Domains[0].Authorities
	swapped.Domains[0].UpstreamChain = []*x509.Certificate{other.Certificate}
	if err := swapped.VerifySignature(rt.OwnAuthorities(), now); !errors.Is(err, trust.ErrBadSignature) {
		t.Fatalf("upstream chain added after signing: %v", err)
	}

	// A signer trusted by the receiver that does not chain to the roots.
	stranger := testkit.Root(t, "stranger-root", now, time.Hour)
	c := *rt
	c.Domains = []trust.DomainBundle{rt.Domains[0]}
	c.Domains[0].Authorities = mustBundle(t, stranger.Certificate)
	if err := ca.SignTrustBundle(&c, stranger.Signer, stranger.Certificate); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifySignature(mustBundle(t, stranger.Certificate), now); !errors.Is(err, trust.ErrUntrustedSigner) ||
		!strings.Contains(err.Error(), "chain") {
		t.Fatalf("a signer outside the bundle's roots: %v", err)
	}

	// The root's serving certificate must come from an authority.
	for name, tc := range map[string]struct {
		parent *ca.Authority
		ok     bool
	}{"meshca CA": {meshCA, true}, "another CA of the upstream": {other, false}} {
		leaf, err := tc.parent.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "serving").Public(), URIs: []*url.URL{trust.RootServerURI},
			TTL: time.Hour, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			t.Fatal(err)
		}
		err = trust.ServerCheck{Root: true, Authorities: rt.OwnAuthorities()}.VerifyChain(
			[]*x509.Certificate{leaf, tc.parent.Certificate, upRoot.Certificate})
		if (err == nil) != tc.ok {
			t.Errorf("%s: ServerCheck = %v", name, err)
		}
	}
}

// A bundle from the wire with a non-CA authority or an upstream chain
// without authorities is refused.
func TestUpstreamAuthoritiesFromProto(t *testing.T) {
	now := time.Now()
	upRoot := testkit.Root(t, "upstream-root", now, 100*24*time.Hour)
	meshCA := testkit.UpstreamCA(t, upRoot, "meshca-ca", 1, now)
	leaf, err := meshCA.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "leaf").Public(), TTL: time.Hour,
		URIs: []*url.URL{spiffeid.RequireFromString("spiffe://east.example/x").URL()}})
	if err != nil {
		t.Fatal(err)
	}
	b := &trust.TrustBundle{Sequence: 1, Domains: []trust.DomainBundle{{TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"),
		Roots: mustBundle(t, upRoot.Certificate), Authorities: mustBundle(t, meshCA.Certificate)}}}
	pb := b.ToProto()
	pb.TrustDomains[0].MeshcaAuthorities = append(pb.TrustDomains[0].MeshcaAuthorities, leaf.Raw)
	if _, err := trust.TrustBundleFromProto(pb); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("a leaf among the authorities: %v", err)
	}
	pb = b.ToProto()
	pb.TrustDomains[0].UpstreamChain, pb.TrustDomains[0].MeshcaAuthorities = [][]byte{meshCA.Certificate.Raw}, nil
	if _, err := trust.TrustBundleFromProto(pb); err == nil || !strings.Contains(err.Error(), "without meshca authorities") {
		t.Fatalf("an upstream chain without authorities: %v", err)
	}
}

// TestSignerTrustedByKey: trust is in meshca's CA key. A bundle signed by
// a certificate the receiver does not hold is accepted when it is one of
// the bundle's authorities and the receiver trusts a valid certificate
// for the same key (the upstream renewed it, or another replica holds its
// own for the shared key); not when the trusted certificate for that key
// has expired, nor when the signer's key is not trusted.
func TestSignerTrustedByKey(t *testing.T) {
	now := time.Now()
	upRoot := testkit.Root(t, "upstream-root", now, 100*24*time.Hour)
	held := testkit.UpstreamCA(t, upRoot, "meshca-ca", 1, now)
	renewed := testkit.UpstreamCA(t, upRoot, "meshca-ca", 1, now.Add(time.Hour))
	expired := testkit.UpstreamCA(t, upRoot, "meshca-ca", 1, now.Add(-72*time.Hour))
	other := testkit.UpstreamCA(t, upRoot, "other-ca", 1, now)
	td := spiffeid.RequireTrustDomainFromString("east.example")
	signed := func(signer *ca.Authority) *trust.TrustBundle {
		b := &trust.TrustBundle{Sequence: 3, Domains: []trust.DomainBundle{{
			TrustDomain: td, Roots: mustBundle(t, upRoot.Certificate), Authorities: mustBundle(t, signer.Certificate),
		}}}
		if err := ca.SignTrustBundle(b, signer.Signer, signer.Certificate); err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		signer  *ca.Authority
		trusted *ca.Authority
		ok      bool
	}{
		{"renewed certificate of the held key", renewed, held, true},
		{"held certificate", held, held, true},
		{"only an expired certificate of the key is trusted", renewed, expired, false},
		{"another key of the same upstream", other, held, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := signed(tc.signer).VerifySignature(mustBundle(t, tc.trusted.Certificate), now.Add(2*time.Hour))
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, trust.ErrUntrustedSigner)) {
				t.Errorf("VerifySignature: %v, want accepted %v", err, tc.ok)
			}
		})
	}
	// A signer named by fingerprint but outside the bundle's authorities
	// is not looked up by key.
	b := signed(renewed)
	b.Domains[0].Authorities = mustBundle(t, held.Certificate)
	if err := ca.SignTrustBundle(b, renewed.Signer, renewed.Certificate); err != nil {
		t.Fatal(err)
	}
	if err := b.VerifySignature(mustBundle(t, held.Certificate), now.Add(2*time.Hour)); err == nil {
		// held is trusted and holds the key, but the bundle names renewed,
		// which it does not carry.
		t.Error("a signer the bundle does not carry was accepted")
	}
}
