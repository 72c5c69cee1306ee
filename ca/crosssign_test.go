package ca_test

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
)

// crossFixture is an old and a new root, an intermediate and a leaf under
// each, and the two cross certificates between the roots.
type crossFixture struct {
	oldRoot, newRoot   *ca.Authority
	oldInter, newInter *ca.Authority
	oldLeaf, newLeaf   *x509.Certificate
	newByOld, oldByNew *x509.Certificate
	trustDomain        spiffeid.TrustDomain
}

func newCrossFixture(t *testing.T) crossFixture {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	f := crossFixture{trustDomain: td}
	f.oldRoot = testkit.Root(t, "cross-old", t0.Add(-24*time.Hour), 30*24*time.Hour)
	f.newRoot = testkit.Root(t, "cross-new", t0, 60*24*time.Hour)
	req := ca.IntermediateRequest{TrustDomain: td, Cluster: "east", Now: t0}
	f.oldInter = testkit.Intermediate(t, f.oldRoot, "cross-old-inter", req)
	f.newInter = testkit.Intermediate(t, f.newRoot, "cross-new-inter", req)
	f.oldLeaf = leafUnder(t, f.oldInter, td.Name())
	f.newLeaf = leafUnder(t, f.newInter, td.Name())
	var err error
	if f.newByOld, err = f.oldRoot.CrossSign(ca.CrossRequest{Subject: f.newRoot.Certificate, Now: t0}); err != nil {
		t.Fatal(err)
	}
	if f.oldByNew, err = f.newRoot.CrossSign(ca.CrossRequest{Subject: f.oldRoot.Certificate, Now: t0}); err != nil {
		t.Fatal(err)
	}
	return f
}

func leafUnder(t *testing.T, in *ca.Authority, td string) *x509.Certificate {
	t.Helper()
	u, _ := url.Parse("spiffe://" + td + "/ns/default/sa/web")
	leaf, err := in.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "cross-leaf").Public(), URIs: []*url.URL{u}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func verifyAt(leaf *x509.Certificate, anchor *x509.Certificate, now time.Time, inters ...*x509.Certificate) error {
	roots, pool := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor)
	for _, c := range inters {
		pool.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// TestCrossSignEitherAnchor: with the cross certificates, each root alone
// verifies leaves of both generations; without them, neither does.
func TestCrossSignEitherAnchor(t *testing.T) {
	f := newCrossFixture(t)
	now := t0.Add(time.Minute)
	for _, tc := range []struct {
		name   string
		leaf   *x509.Certificate
		anchor *x509.Certificate
		inters []*x509.Certificate
		ok     bool
	}{
		{"new leaf, old anchor, cross", f.newLeaf, f.oldRoot.Certificate, []*x509.Certificate{f.newInter.Certificate, f.newByOld}, true},
		{"old leaf, new anchor, cross", f.oldLeaf, f.newRoot.Certificate, []*x509.Certificate{f.oldInter.Certificate, f.oldByNew}, true},
		{"new leaf, old anchor, no cross", f.newLeaf, f.oldRoot.Certificate, []*x509.Certificate{f.newInter.Certificate}, false},
		{"old leaf, new anchor, no cross", f.oldLeaf, f.newRoot.Certificate, []*x509.Certificate{f.oldInter.Certificate}, false},
		// The cross certificate meant for the other direction is no help.
		{"new leaf, old anchor, wrong cross", f.newLeaf, f.oldRoot.Certificate, []*x509.Certificate{f.newInter.Certificate, f.oldByNew}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyAt(tc.leaf, tc.anchor, now, tc.inters...)
			if (err == nil) != tc.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCrossSignShape(t *testing.T) {
	f := newCrossFixture(t)
	c := f.newByOld
	if string(c.RawSubject) != string(f.newRoot.Certificate.RawSubject) || string(c.RawIssuer) != string(f.oldRoot.Certificate.RawSubject) {
		t.Errorf("subject %q issuer %q, want the new root's subject issued by the old root", c.Subject, c.Issuer)
	}
	if !c.IsCA || c.MaxPathLen != 1 || c.MaxPathLenZero {
		t.Errorf("IsCA=%v MaxPathLen=%d, want a CA of path length 1", c.IsCA, c.MaxPathLen)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || len(c.ExtKeyUsage) != 0 {
		t.Errorf("key usage %v, extended %v", c.KeyUsage, c.ExtKeyUsage)
	}
	if string(c.SubjectKeyId) != string(f.newRoot.Certificate.SubjectKeyId) || string(c.AuthorityKeyId) != string(f.oldRoot.Certificate.SubjectKeyId) {
		t.Error("key identifiers are not the subject root's and the signer's")
	}
	// Within both roots: the old one ends first.
	if c.NotAfter.After(f.oldRoot.Certificate.NotAfter) || c.NotBefore.Before(f.newRoot.Certificate.NotBefore) {
		t.Errorf("validity %s to %s is not within both roots", c.NotBefore, c.NotAfter)
	}
	if c.NotAfter.After(f.newRoot.Certificate.NotAfter) || f.oldByNew.NotAfter.After(f.oldRoot.Certificate.NotAfter) {
		t.Error("a cross certificate outlives a root")
	}
}

// TestCrossSignBounds: the requested end is kept, and a leaf under the
// old root is no longer accepted by the new anchor once it has passed:
// the cross certificate does not keep a retired root alive.
func TestCrossSignBounds(t *testing.T) {
	f := newCrossFixture(t)
	end := t0.Add(2 * time.Hour)
	c, err := f.newRoot.CrossSign(ca.CrossRequest{Subject: f.oldRoot.Certificate, NotAfter: end, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if !c.NotAfter.Equal(end) {
		t.Fatalf("NotAfter %s, want %s", c.NotAfter, end)
	}
	if err := verifyAt(f.oldLeaf, f.newRoot.Certificate, t0.Add(30*time.Minute), f.oldInter.Certificate, c); err != nil {
		t.Fatalf("before its end: %v", err)
	}
	// A fresh intermediate the old key signs after the end (a stolen key).
	late := t0.Add(3 * time.Hour)
	k := testkit.Key(t, "cross-late")
	ic, err := f.oldRoot.SignIntermediate(ca.IntermediateRequest{PublicKey: k.Public(), TrustDomain: f.trustDomain, Cluster: "x", Now: late})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := ca.NewAuthority(ic, k)
	u, _ := url.Parse("spiffe://cluster.local/ns/a/sa/b")
	leaf, err := in.SignLeaf(ca.LeafRequest{PublicKey: k.Public(), URIs: []*url.URL{u}, TTL: time.Hour, Now: late})
	if err != nil {
		t.Fatal(err)
	}
	var inv x509.CertificateInvalidError
	if err := verifyAt(leaf, f.newRoot.Certificate, late, ic, c); !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Fatalf("after the cross certificate's end: %v, want it expired", err)
	}
	if _, err := f.newRoot.CrossSign(ca.CrossRequest{Subject: f.oldRoot.Certificate, NotAfter: t0, Now: t0}); !errors.Is(err, ca.ErrCAExpired) {
		t.Errorf("an end already passed: %v, want ErrCAExpired", err)
	}
}

// TestCrossSignConstraintsHold: a cross-signed path grants nothing the
// direct one does not: the intermediate's name constraints and path
// length hold, and two cross certificates do not chain.
func TestCrossSignConstraintsHold(t *testing.T) {
	f := newCrossFixture(t)
	now := t0.Add(time.Minute)
	// A leaf outside the intermediate's trust domain.
	u, _ := url.Parse("spiffe://evil.example/ns/a/sa/b")
	k := testkit.Key(t, "cross-leaf")
	out, err := (&ca.Authority{Certificate: f.newInter.Certificate, Signer: f.newInter.Signer}).SignLeaf(
		ca.LeafRequest{PublicKey: k.Public(), URIs: []*url.URL{u}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	var inv x509.CertificateInvalidError
	if err := verifyAt(out, f.oldRoot.Certificate, now, f.newInter.Certificate, f.newByOld); !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("leaf outside the trust domain through the cross certificate: %v, want a name constraint violation", err)
	}
	// A CA under the intermediate (path length 0) stays refused.
	sub, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: f.newLeaf.SerialNumber, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: t0, NotAfter: t0.Add(time.Hour)},
		f.newInter.Certificate, k.Public(), f.newInter.Signer)
	if err != nil {
		t.Fatal(err)
	}
	subCA, err := x509.ParseCertificate(sub)
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafUnder(t, &ca.Authority{Certificate: subCA, Signer: k}, "cluster.local")
	if err := verifyAt(leaf, f.oldRoot.Certificate, now, subCA, f.newInter.Certificate, f.newByOld); err == nil {
		t.Error("a CA under the intermediate verifies through the cross certificate")
	}
	// old leaf -> old inter -> (old by new) -> (new by old) -> old root
	// is one CA too many for the cross certificates' path length; the
	// direct path is the only one Go finds, and it has no cross in it.
	chains, err := f.oldLeaf.Verify(x509.VerifyOptions{Roots: pool(f.oldRoot.Certificate), Intermediates: pool(f.oldInter.Certificate, f.oldByNew, f.newByOld),
		CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if len(ch) != 3 {
			t.Errorf("a chain through the cross certificates was accepted: %d certificates", len(ch))
		}
	}
}

func TestCrossSignRefuses(t *testing.T) {
	f := newCrossFixture(t)
	// A root of the old root's name with another key: a cross certificate
	// to it would be self-issued.
	k := testkit.Key(t, "cross-namesake")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), RawSubject: f.oldRoot.Certificate.RawSubject, IsCA: true,
		BasicConstraintsValid: true, MaxPathLen: 2, KeyUsage: x509.KeyUsageCertSign, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	namesake, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		signer *ca.Authority
		req    ca.CrossRequest
	}{
		{"no subject", f.oldRoot, ca.CrossRequest{Now: t0}},
		{"itself", f.oldRoot, ca.CrossRequest{Subject: f.oldRoot.Certificate, Now: t0}},
		{"subject is an intermediate", f.oldRoot, ca.CrossRequest{Subject: f.newInter.Certificate, Now: t0}},
		{"signer is an intermediate", f.newInter, ca.CrossRequest{Subject: f.oldRoot.Certificate, Now: t0}},
		{"same name", f.oldRoot, ca.CrossRequest{Subject: namesake, Now: t0}},
		{"signer expired", f.oldRoot, ca.CrossRequest{Subject: f.newRoot.Certificate, Now: f.oldRoot.Certificate.NotAfter.Add(time.Hour)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := tc.signer.CrossSign(tc.req); err == nil {
				t.Fatalf("signed %q by %q", c.Subject, c.Issuer)
			}
		})
	}
}

func pool(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}
