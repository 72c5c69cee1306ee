package ca_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"math/big"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func TestNewRoot(t *testing.T) {
	root, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "root"), Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	c := root.Certificate
	if !c.IsCA || c.MaxPathLen != 2 {
		t.Errorf("IsCA=%v MaxPathLen=%d, want CA with path length 2 (a cross certificate and an intermediate)", c.IsCA, c.MaxPathLen)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if got, want := c.NotAfter, t0.Add(ca.DefaultRootTTL); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("KeyUsage = %v", c.KeyUsage)
	}
	if c.Subject.CommonName != "meshca root CA" {
		t.Errorf("CommonName = %q", c.Subject.CommonName)
	}
}

// TestNewRootNames: every key gets its own root name (serialNumber from the
// key's SHA-256), so no cross certificate between two roots is self-issued;
// the same key keeps its name.
func TestNewRootNames(t *testing.T) {
	a := testkit.Root(t, "root", t0, time.Hour)
	again := testkit.Root(t, "root", t0.Add(time.Minute), time.Hour)
	b := testkit.Root(t, "root-other", t0, time.Hour)
	spki := sha256.Sum256(a.Certificate.RawSubjectPublicKeyInfo)
	if got, want := a.Certificate.Subject.SerialNumber, hex.EncodeToString(spki[:8]); got != want {
		t.Errorf("serialNumber = %q, want %q (SHA-256 of the key, first 8 bytes)", got, want)
	}
	if a.Certificate.Subject.CommonName != "meshca root CA" || !slices.Equal(a.Certificate.Subject.Organization, []string{"meshca"}) {
		t.Errorf("subject %q lost the common name or organization", a.Certificate.Subject)
	}
	if string(a.Certificate.RawSubject) != string(again.Certificate.RawSubject) {
		t.Errorf("one key, two names: %q and %q", a.Certificate.Subject, again.Certificate.Subject)
	}
	if string(a.Certificate.RawSubject) == string(b.Certificate.RawSubject) {
		t.Errorf("two keys share the root name %q", a.Certificate.Subject)
	}
}

func TestSignIntermediate(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	ic := tree.Intermediate.Certificate
	if !ic.IsCA || ic.MaxPathLen != 0 || !ic.MaxPathLenZero {
		t.Errorf("intermediate IsCA=%v MaxPathLen=%d zero=%v, want path length 0", ic.IsCA, ic.MaxPathLen, ic.MaxPathLenZero)
	}
	if !slices.Equal(ic.PermittedURIDomains, []string{"cluster.local"}) || !slices.Equal(ic.ExcludedURIDomains, []string{".cluster.local"}) || !ic.PermittedDNSDomainsCritical {
		t.Errorf("name constraints = %v critical=%v", ic.PermittedURIDomains, ic.PermittedDNSDomainsCritical)
	}
	if err := ic.CheckSignatureFrom(tree.Root.Certificate); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}
	if got, want := ic.NotAfter, t0.Add(ca.DefaultIntermediateTTL); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
}

func TestSignIntermediateNeverOutlivesRoot(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0, RootTTL: 48 * time.Hour, IntermediateTTL: 24 * time.Hour})
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ic, err := tree.Root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: testkit.Key(t, "x").Public(), TrustDomain: td, Cluster: "c", TTL: 365 * 24 * time.Hour, Now: t0.Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !ic.NotAfter.Equal(tree.Root.Certificate.NotAfter) {
		t.Errorf("intermediate NotAfter %v, want clamped to root's %v", ic.NotAfter, tree.Root.Certificate.NotAfter)
	}
	_, err = tree.Root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: testkit.Key(t, "x").Public(), TrustDomain: td, Cluster: "c", Now: t0.Add(49 * time.Hour),
	})
	if !errors.Is(err, ca.ErrCAExpired) {
		t.Errorf("signing with an expired root: err = %v, want ErrCAExpired", err)
	}
}

func TestSignLeaf(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")
	leaf, err := tree.Intermediate.SignLeaf(ca.LeafRequest{
		PublicKey: testkit.Key(t, "leaf").Public(), URIs: []*url.URL{id.URL()}, TTL: time.Hour, Now: t0,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := leaf.NotAfter, t0.Add(time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if leaf.NotBefore.After(t0) {
		t.Errorf("NotBefore %v is after issuance time", leaf.NotBefore)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if leaf.SerialNumber.BitLen() < 100 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial has %d bits, want a random 128-bit value", leaf.SerialNumber.BitLen())
	}
	// The chain verifies with crypto/x509 and with go-spiffe.
	roots := tree.Bundle.Pool()
	inters := x509.NewCertPool()
	inters.AddCert(tree.Intermediate.Certificate)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("x509 verify: %v", err)
	}
	xb := x509bundle.FromX509Authorities(tree.TrustDomain, tree.Bundle.Roots())
	gotID, _, err := x509svid.Verify([]*x509.Certificate{leaf, tree.Intermediate.Certificate}, xb, x509svid.WithTime(t0))
	if err != nil {
		t.Fatalf("x509svid verify: %v", err)
	}
	if gotID != id {
		t.Errorf("verified ID %v, want %v", gotID, id)
	}
}

func TestSignLeafClampedToIntermediate(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0, IntermediateTTL: 2 * time.Hour})
	leaf, err := tree.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "leaf").Public(), TTL: 24 * time.Hour, Now: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotAfter.Equal(tree.Intermediate.Certificate.NotAfter) {
		t.Errorf("leaf NotAfter %v outlives intermediate %v", leaf.NotAfter, tree.Intermediate.Certificate.NotAfter)
	}
	_, err = tree.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "leaf").Public(), TTL: time.Hour, Now: t0.Add(3 * time.Hour)})
	if !errors.Is(err, ca.ErrCAExpired) {
		t.Errorf("signing with an expired intermediate: err = %v, want ErrCAExpired", err)
	}
}

// A certificate for another trust domain, signed directly with the
// intermediate's key (bypassing the issuer's policy), must still be rejected
// by verifiers because of the intermediate's URI name constraint.
func TestNameConstraintRejectsForeignTrustDomain(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	for _, tc := range []struct {
		name   string
		id     string
		wantOK bool
	}{
		{"own trust domain", "spiffe://cluster.local/ns/a/sa/b", true},
		{"other trust domain", "spiffe://other.example/ns/a/sa/b", false},
		{"subdomain of own trust domain", "spiffe://evil.cluster.local/ns/a/sa/b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(tc.id)
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(42), URIs: []*url.URL{u},
				NotBefore: t0.Add(-time.Minute), NotAfter: t0.Add(time.Hour),
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tree.Intermediate.Certificate, testkit.Key(t, "leaf").Public(), tree.Intermediate.Signer)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := x509.ParseCertificate(der)
			inters := x509.NewCertPool()
			inters.AddCert(tree.Intermediate.Certificate)
			_, err = leaf.Verify(x509.VerifyOptions{Roots: tree.Bundle.Pool(), Intermediates: inters, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if (err == nil) != tc.wantOK {
				t.Errorf("x509 verify err = %v, want ok=%v", err, tc.wantOK)
			}
			td := spiffeid.RequireFromString(tc.id).TrustDomain()
			xb := x509bundle.FromX509Authorities(td, tree.Bundle.Roots())
			_, _, err = x509svid.Verify([]*x509.Certificate{leaf, tree.Intermediate.Certificate}, xb, x509svid.WithTime(t0))
			if (err == nil) != tc.wantOK {
				t.Errorf("x509svid verify err = %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
}

func TestNewAuthorityRejectsMismatchedKey(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	if _, err := ca.NewAuthority(tree.Root.Certificate, testkit.Key(t, "other")); err == nil {
		t.Error("NewAuthority accepted a signer that does not match the certificate")
	}
}

// corruptSigner signs with the right key, then flips a bit of the signature:
// a faulty HSM or remote signer.
type corruptSigner struct{ crypto.Signer }

func (s corruptSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.Signer.Sign(r, digest, opts)
	if err == nil {
		sig[len(sig)-1] ^= 1
	}
	return sig, err
}

// The issuer does not check a leaf's signature a second time: SignLeaf must
// only return leaves whose signature verified against the authority's
// certificate. These signers break that in the two ways it can break.
func TestSignLeafRefusesBadSignatures(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")
	for name, signer := range map[string]crypto.Signer{
		"corrupt signature": corruptSigner{tree.Intermediate.Signer},
		"other key":         testkit.Key(t, "other"),
	} {
		t.Run(name, func(t *testing.T) {
			a := &ca.Authority{Certificate: tree.Intermediate.Certificate, Signer: signer}
			leaf, err := a.SignLeaf(ca.LeafRequest{
				PublicKey: testkit.Key(t, "leaf").Public(), URIs: []*url.URL{id.URL()}, TTL: time.Hour, Now: t0,
			})
			if err == nil {
				t.Fatalf("SignLeaf returned a leaf (serial %x) with a bad signature", leaf.SerialNumber)
			}
		})
	}
}
