package root

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// crossOf returns the published cross certificate with subject's key signed
// by issuer, nil when there is none.
func crossOf(b *trust.TrustBundle, subject, issuer *x509.Certificate) *x509.Certificate {
	for _, c := range b.CrossSigned {
		if bytes.Equal(c.RawSubjectPublicKeyInfo, subject.RawSubjectPublicKeyInfo) && c.CheckSignatureFrom(issuer) == nil {
			return c
		}
	}
	return nil
}

// TestRootRotationCrossCertificates follows the cross certificates through a
// rotation: minted with the new root, stored with it (a restarted root
// publishes the same ones), bounded by the old root's last use, clamping the
// old root's late intermediates to that bound, and gone with the old root.
func TestRootRotationCrossCertificates(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	iss := h.mustEnroll(addr, "east", "east.example")
	rootA := h.activeRoot()
	admin := &adminService{r: h.root}

	h.clock.Advance(time.Minute)
	rot, err := admin.RotateRoot(context.Background(), &meshcav1.RotateRootRequest{})
	if err != nil {
		t.Fatal(err)
	}
	activateAt := rot.GetRoot().GetActivateAt().AsTime()
	rootB := h.root.Roots()[1].Cert
	b, _ := h.root.Current()
	if len(b.CrossSigned) != 2 {
		t.Fatalf("bundle with a prepared root carries %d cross certificates, want 2", len(b.CrossSigned))
	}
	bByA, aByB := crossOf(b, rootB, rootA), crossOf(b, rootA, rootB)
	if bByA == nil || aByB == nil {
		t.Fatal("the bundle lacks the new root under the old one or the old root under the new one")
	}
	if !bByA.NotAfter.Equal(slices.MinFunc([]time.Time{rootA.NotAfter, rootB.NotAfter}, time.Time.Compare)) {
		t.Errorf("new root under the old one ends %s, want the earlier root's end", bByA.NotAfter)
	}
	if want := activateAt.Add(h.cfg.IntermediateTTL); !aByB.NotAfter.Equal(want) {
		t.Errorf("old root under the new one ends %s, want one intermediate life after activation (%s)", aByB.NotAfter, want)
	}
	wantSignedBy(t, b, rootA)
	// Stored with the new root: another replica, or a restart, publishes
	// the same certificates.
	again := h.start()
	if b2, _ := again.Current(); !b2.Equal(b) {
		t.Error("a root started on the same store publishes other cross certificates")
	}

	// Past the activation time, before the root re-evaluates, the old root
	// still signs: its intermediate ends with the cross certificate, not
	// later.
	h.clock.Advance(activateAt.Sub(h.clock.Now()) + h.cfg.IntermediateTTL/2)
	conn := h.dial(addr, iss.tlsCert())
	late, err := renew(t, conn, iss, false)
	if err != nil {
		t.Fatal(err)
	}
	if !signedBy(late.inter, rootA, h.clock.Now()) || late.inter.NotAfter.After(aByB.NotAfter) {
		t.Fatalf("late intermediate under the old root ends %s, after the cross certificate (%s)", late.inter.NotAfter, aByB.NotAfter)
	}

	h.refresh()
	wantStates(t, h, RootRetiring, RootActive)
	if b, _ := h.root.Current(); len(b.CrossSigned) != 2 {
		t.Fatalf("while the old root retires the bundle carries %d cross certificates, want 2", len(b.CrossSigned))
	}
	// Nothing under the old root outlives the certificate that vouches for
	// it under the new one.
	ins, err := h.db.Intermediates(context.Background(), store.IntermediateFilter{RootFingerprint: fingerprintHex(rootA)})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if in.NotAfter.After(aByB.NotAfter) {
			t.Errorf("intermediate %s under the old root ends %s, after its cross certificate", in.Serial, in.NotAfter)
		}
	}

	// Retired: the old root and its cross certificates leave together.
	h.clock.Advance(aByB.NotAfter.Sub(h.clock.Now()) + time.Second)
	h.refresh()
	wantStates(t, h, RootRetired, RootActive)
	b, _ = h.root.Current()
	if len(b.CrossSigned) != 0 {
		t.Fatalf("after the old root retired the bundle carries %d cross certificates", len(b.CrossSigned))
	}
	wantSignedBy(t, b, rootB)
}

// TestCrossSignedLeftOutWhenUnlinked: a recorded cross certificate is
// published only while both of its roots are in the bundle and it is valid.
func TestCrossSignedLeftOutWhenUnlinked(t *testing.T) {
	h := newHarness(t, nil)
	rootA := h.activeRoot()
	h.clock.Advance(time.Minute)
	if _, err := h.root.rotate(context.Background(), 0, "admin:test", false); err != nil {
		t.Fatal(err)
	}
	statuses := h.root.Roots()
	rootB := statuses[1].Cert
	onlyB, err := trust.NewBundle(rootB)
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	if got, _ := crossSignedLocked(statuses, onlyB, trust.Fingerprint(rootB), now); len(got) != 0 {
		t.Errorf("with the old root out of the bundle, %d cross certificates are published", len(got))
	}
	both, err := trust.NewBundle(rootA, rootB)
	if err != nil {
		t.Fatal(err)
	}
	got, until := crossSignedLocked(statuses, both, trust.Fingerprint(rootA), now)
	if len(got) != 2 || until.IsZero() {
		t.Fatalf("with both roots: %d cross certificates, clamp %s; want 2 and the old root's end", len(got), until)
	}
	if got, _ := crossSignedLocked(statuses, both, trust.Fingerprint(rootA), until.Add(time.Second)); len(got) != 1 {
		t.Errorf("after the old root's cross certificate expired, %d are published, want the other one alone", len(got))
	}
}

// TestCrossCertificatesDoNotChain: after a forced rotation A → B → C every
// root has its own name, so no cross certificate is self-issued, and the
// cross certificates' path length stops a chain through two of them (A by
// B, then B by C) in OpenSSL (which exempts self-issued certificates from
// the count, as BoringSSL in Envoy does) as in crypto/x509, while each
// minted pair still links its two roots.
func TestCrossCertificatesDoNotChain(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	iss := h.mustEnroll(addr, "east", "east.example")
	rootA := h.activeRoot()
	ctx := context.Background()
	if _, err := h.root.rotate(ctx, 0, "admin:test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.root.rotate(ctx, 0, "admin:test", true); err != nil {
		t.Fatal(err)
	}
	statuses := h.root.Roots()
	if len(statuses) != 3 {
		t.Fatalf("%d roots after two rotations, want 3", len(statuses))
	}
	rootB, rootC := statuses[1].Cert, statuses[2].Cert
	for i, x := range []*x509.Certificate{rootA, rootB, rootC} {
		for _, y := range []*x509.Certificate{rootA, rootB, rootC}[i+1:] {
			if bytes.Equal(x.RawSubject, y.RawSubject) {
				t.Fatalf("two roots share the name %q", x.Subject)
			}
		}
	}
	b, _ := h.root.Current()
	if len(b.CrossSigned) != 6 {
		t.Fatalf("bundle carries %d cross certificates, want 6 (each pair of three roots, both ways)", len(b.CrossSigned))
	}
	for _, c := range b.CrossSigned {
		if bytes.Equal(c.RawSubject, c.RawIssuer) {
			t.Errorf("cross certificate %q is self-issued", c.Subject)
		}
	}
	aByB, bByC, aByC := crossOf(b, rootA, rootB), crossOf(b, rootB, rootC), crossOf(b, rootA, rootC)
	if aByB == nil || bByC == nil || aByC == nil {
		t.Fatal("the bundle lacks a minted cross certificate")
	}
	u, _ := url.Parse("spiffe://east.example/ns/default/sa/web")
	now := h.clock.Now()
	leaf, err := iss.authority(t).SignLeaf(ca.LeafRequest{PublicKey: newKey(t).Public(), URIs: []*url.URL{u}, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		anchor *x509.Certificate
		chain  []*x509.Certificate
		ok     bool
	}{
		{"A's leaf, anchor B, A by B", rootB, []*x509.Certificate{iss.inter, aByB}, true},
		{"A's leaf, anchor C, A by C", rootC, []*x509.Certificate{iss.inter, aByC}, true},
		{"A's leaf, anchor C, A by B then B by C", rootC, []*x509.Certificate{iss.inter, aByB, bByC}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			anchors, inters := x509.NewCertPool(), x509.NewCertPool()
			anchors.AddCert(tc.anchor)
			for _, c := range tc.chain {
				inters.AddCert(c)
			}
			_, goErr := leaf.Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inters, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if (goErr == nil) != tc.ok {
				t.Errorf("crypto/x509: %v, want ok=%v", goErr, tc.ok)
			}
			out, sslErr := testkit.OpenSSLVerify(t, []*x509.Certificate{tc.anchor}, tc.chain, leaf, now)
			if (sslErr == nil) != tc.ok {
				t.Errorf("openssl verify: %v, want ok=%v\n%s", sslErr, tc.ok, out)
			}
			if !tc.ok && !strings.Contains(out, "path length") {
				t.Errorf("openssl refused for another reason than the path length:\n%s", out)
			}
		})
	}
}
