package issuer

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// crossWorld is an old and a new root, both directions of cross
// certificates, and an intermediate under each root.
type crossWorld struct {
	now                time.Time
	td                 spiffeid.TrustDomain
	oldRoot, newRoot   *ca.Authority
	oldInter, newInter *ca.Authority
	newByOld, oldByNew *x509.Certificate
}

func newCrossWorld(t *testing.T, crossEnd time.Time) crossWorld {
	t.Helper()
	w := crossWorld{now: time.Now(), td: spiffeid.RequireTrustDomainFromString("cluster.local")}
	w.oldRoot = testkit.Root(t, "xchain-old", w.now.Add(-time.Hour), 24*time.Hour)
	w.newRoot = testkit.Root(t, "xchain-new", w.now.Add(-time.Minute), 48*time.Hour)
	req := ca.IntermediateRequest{TrustDomain: w.td, Cluster: "east", ServingNames: testkit.TestServingNames, TTL: 2 * time.Hour, Now: w.now}
	w.oldInter = testkit.Intermediate(t, w.oldRoot, "xchain-old-inter", req)
	w.newInter = testkit.Intermediate(t, w.newRoot, "xchain-new-inter", req)
	var err error
	if w.newByOld, err = w.oldRoot.CrossSign(ca.CrossRequest{Subject: w.newRoot.Certificate, Now: w.now}); err != nil {
		t.Fatal(err)
	}
	if w.oldByNew, err = w.newRoot.CrossSign(ca.CrossRequest{Subject: w.oldRoot.Certificate, NotAfter: crossEnd, Now: w.now}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w crossWorld) bundle(t *testing.T, cross ...*x509.Certificate) *trust.Bundle {
	t.Helper()
	b, err := trust.NewBundle(w.oldRoot.Certificate, w.newRoot.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return b.WithCrossSigned(cross...)
}

func (w crossWorld) issuer(t *testing.T, a *ca.Authority, b *trust.Bundle) (*Issuer, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	iss := &Issuer{cfg: Config{TrustDomain: w.td, Now: func() time.Time { return w.now }, Logger: slog.New(slog.NewJSONHandler(logs, nil))}}
	if err := iss.SetAuthority(a, b); err != nil {
		t.Fatal(err)
	}
	return iss, logs
}

// TestChainCarriesCrossAndEveryRoot: a response under either root carries
// the cross certificate that certifies its root under the other, then one
// last entry with both roots (the signing root first), and each root alone
// verifies the leaf with the response's own certificates.
func TestChainCarriesCrossAndEveryRoot(t *testing.T) {
	for _, tc := range []struct {
		name          string
		inter         func(crossWorld) *ca.Authority
		signing, peer func(crossWorld) *ca.Authority
		cross         func(crossWorld) *x509.Certificate
	}{
		{"old generation", func(w crossWorld) *ca.Authority { return w.oldInter },
			func(w crossWorld) *ca.Authority { return w.oldRoot }, func(w crossWorld) *ca.Authority { return w.newRoot },
			func(w crossWorld) *x509.Certificate { return w.oldByNew }},
		{"new generation", func(w crossWorld) *ca.Authority { return w.newInter },
			func(w crossWorld) *ca.Authority { return w.newRoot }, func(w crossWorld) *ca.Authority { return w.oldRoot },
			func(w crossWorld) *x509.Certificate { return w.newByOld }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newCrossWorld(t, time.Time{})
			iss, _ := w.issuer(t, tc.inter(w), w.bundle(t, w.newByOld, w.oldByNew))
			s := iss.current()
			if len(s.chain) != 2 || !s.chain[1].Equal(tc.cross(w)) {
				t.Fatalf("chain after the leaf holds %d certificates, want the intermediate and its root's cross certificate", len(s.chain))
			}
			last := s.tailPEM[len(s.tailPEM)-1]
			roots, err := trust.ParseCertificates([]byte(last))
			if err != nil {
				t.Fatal(err)
			}
			if len(roots) != 2 || !roots[0].Equal(tc.signing(w).Certificate) || !roots[1].Equal(tc.peer(w).Certificate) {
				t.Fatalf("last entry holds %d certificates, want the signing root then the other", len(roots))
			}
			// meshca's agent reads the first certificate of each entry.
			if first, err := trust.ParseCertificate([]byte(last)); err != nil || !first.Equal(tc.signing(w).Certificate) {
				t.Errorf("first certificate of the last entry: %v, want the signing root", err)
			}
			leaf := issueLeaf(t, iss, w)
			for _, anchor := range []*ca.Authority{tc.signing(w), tc.peer(w)} {
				if err := verifyWith(leaf, s, anchor.Certificate, w.now); err != nil {
					t.Errorf("leaf does not verify against %s alone: %v", anchor.Certificate.SerialNumber, err)
				}
			}
		})
	}
}

func issueLeaf(t *testing.T, iss *Issuer, w crossWorld) *x509.Certificate {
	t.Helper()
	s := iss.current()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")
	key := testkit.Key(t, "xchain-leaf")
	leaf, err := s.authority.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{id.URL()}, TTL: time.Hour, Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.verify(leaf, key.Public(), id, nil, w.now); err != nil {
		t.Fatalf("issuer's own check: %v", err)
	}
	return leaf
}

func verifyWith(leaf *x509.Certificate, s *signing, anchor *x509.Certificate, now time.Time) error {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor)
	for _, c := range s.chain {
		inters.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// TestChainLeavesOutUnfitCross: a cross certificate that would let a
// chain outlive it, one that links no two roots of the bundle, and one
// whose issuing root's path length leaves no room for it are not sent.
func TestChainLeavesOutUnfitCross(t *testing.T) {
	t.Run("ends before the intermediate", func(t *testing.T) {
		w := newCrossWorld(t, time.Now().Add(time.Hour)) // the intermediate lives 2h
		iss, logs := w.issuer(t, w.oldInter, w.bundle(t, w.oldByNew))
		if n := len(iss.current().chain); n != 1 {
			t.Fatalf("chain after the leaf holds %d certificates, want the intermediate alone", n)
		}
		if logs.String() != "" {
			t.Errorf("a cross certificate that merely ends early is not a problem to log: %s", logs.String())
		}
	})
	t.Run("signed by a root outside the bundle", func(t *testing.T) {
		w := newCrossWorld(t, time.Time{})
		stranger := testkit.Root(t, "xchain-stranger", w.now.Add(-time.Hour), 24*time.Hour)
		foreign, err := stranger.CrossSign(ca.CrossRequest{Subject: w.newRoot.Certificate, Now: w.now})
		if err != nil {
			t.Fatal(err)
		}
		b := w.bundle(t, foreign)
		if n := len(b.CrossSigned()); n != 0 {
			t.Fatalf("bundle kept %d cross certificates from a root it does not hold", n)
		}
		iss, _ := w.issuer(t, w.newInter, b)
		if n := len(iss.current().chain); n != 1 {
			t.Fatalf("chain after the leaf holds %d certificates, want the intermediate alone", n)
		}
	})
	t.Run("issuing root of path length 1", func(t *testing.T) {
		w := newCrossWorld(t, time.Time{})
		// A root as meshca made them before cross-signing: path length 1.
		key := testkit.Key(t, "xchain-pathlen1")
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(11), Subject: pkix.Name{CommonName: "meshca root CA", Organization: []string{"meshca"}},
			NotBefore: w.now.Add(-time.Hour), NotAfter: w.now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		old, err := ca.NewAuthority(c, key)
		if err != nil {
			t.Fatal(err)
		}
		newByOld, err := old.CrossSign(ca.CrossRequest{Subject: w.newRoot.Certificate, Now: w.now})
		if err != nil {
			t.Fatal(err)
		}
		b, err := trust.NewBundle(old.Certificate, w.newRoot.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		iss, logs := w.issuer(t, w.newInter, b.WithCrossSigned(newByOld))
		if n := len(iss.current().chain); n != 1 {
			t.Fatalf("chain after the leaf holds %d certificates, want the intermediate alone", n)
		}
		if !strings.Contains(logs.String(), "path") {
			t.Errorf("the unusable cross certificate was not logged: %q", logs.String())
		}
		// crypto/x509 would indeed refuse the chain.
		leaf := issueLeaf(t, iss, w)
		s := *iss.current()
		s.chain = append(s.chain, newByOld)
		if err := verifyWith(leaf, &s, old.Certificate, w.now); err == nil {
			t.Error("crypto/x509 accepts a cross-signed chain under a root of path length 1")
		}
	})
}

// TestCrossSignedKeepsOnlyLinks: WithCrossSigned keeps a certificate only
// when it carries one root's subject and key and another root signed it.
func TestCrossSignedKeepsOnlyLinks(t *testing.T) {
	w := newCrossWorld(t, time.Time{})
	b := w.bundle(t, w.newByOld, w.oldByNew, w.newInter.Certificate, w.oldRoot.Certificate, w.newByOld)
	got := b.CrossSigned()
	if len(got) != 2 {
		t.Fatalf("kept %d certificates, want the two cross certificates", len(got))
	}
	for _, cc := range got {
		if !bytes.Equal(cc.Certificate.RawSubjectPublicKeyInfo, cc.Subject.RawSubjectPublicKeyInfo) || cc.Certificate.CheckSignatureFrom(cc.Issuer) != nil {
			t.Errorf("link %s is not its subject's key signed by its issuer", cc.Certificate.SerialNumber)
		}
	}
	// The name of a root is not enough: a root of the same name but another
	// key, certified by a bundle root, links nothing.
	key := testkit.Key(t, "xchain-impostor")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(12), RawSubject: w.newRoot.Certificate.RawSubject,
		NotBefore: w.now.Add(-time.Hour), NotAfter: w.now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLen: 2,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(impostor.RawSubject, w.newRoot.Certificate.RawSubject) {
		t.Fatal("the impostor root should carry the new root's name")
	}
	byOld, err := w.oldRoot.CrossSign(ca.CrossRequest{Subject: impostor, Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w.bundle(t, byOld).CrossSigned()); n != 0 {
		t.Errorf("kept %d cross certificates for a key the bundle does not hold", n)
	}
	// A bundle holding only the new root keeps no link to the old one.
	only, err := trust.NewBundle(w.newRoot.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(only.WithCrossSigned(w.newByOld, w.oldByNew).CrossSigned()); n != 0 {
		t.Errorf("a one-root bundle kept %d cross certificates", n)
	}
}
