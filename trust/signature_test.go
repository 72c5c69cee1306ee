package trust_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// signedTestBundle is a bundle with two own domains, a federated one and
// CRLs, active root a, not signed yet.
func signedTestBundle(t *testing.T, a, fedRoot *ca.Authority) *trust.TrustBundle {
	t.Helper()
	own := mustBundle(t, a.Certificate)
	return &trust.TrustBundle{
		Sequence: 7, ActiveRoot: trust.Fingerprint(a.Certificate), RefreshHint: time.Minute,
		Domains: []trust.DomainBundle{
			{TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Roots: own, CRLs: []trust.CRL{{DER: []byte("crl-east")}}},
			{TrustDomain: spiffeid.RequireTrustDomainFromString("partner.example"), Roots: mustBundle(t, fedRoot.Certificate),
				Federated: true, CRLs: []trust.CRL{{DER: []byte("crl-partner-1")}, {DER: []byte("crl-partner-2")}}},
			{TrustDomain: spiffeid.RequireTrustDomainFromString("west.example"), Roots: own},
		},
	}
}

func mustBundle(t *testing.T, certs ...*x509.Certificate) *trust.Bundle {
	t.Helper()
	b, err := trust.NewBundle(certs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTrustBundleSignVerify(t *testing.T) {
	a := testkit.Root(t, "root-a", t0, 24*time.Hour)
	other := testkit.Root(t, "root-b", t0, 24*time.Hour)
	fed := testkit.Root(t, "root-fed", t0, 24*time.Hour)
	b := signedTestBundle(t, a, fed)
	if err := b.VerifySignature(mustBundle(t, a.Certificate), t0.Add(time.Minute)); !errors.Is(err, trust.ErrUnsigned) {
		t.Fatalf("unsigned: %v, want ErrUnsigned", err)
	}
	if err := ca.SignTrustBundle(b, a.Signer, a.Certificate); err != nil {
		t.Fatal(err)
	}
	if b.Signer != trust.Fingerprint(a.Certificate) || len(b.Signature) == 0 {
		t.Fatal("Sign did not set Signer and Signature")
	}
	if err := b.VerifySignature(mustBundle(t, other.Certificate, a.Certificate), t0.Add(time.Minute)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := b.VerifySignature(mustBundle(t, a.Certificate), t0.Add(25*time.Hour)); !errors.Is(err, trust.ErrUntrustedSigner) {
		t.Errorf("signed by an expired root: %v, want ErrUntrustedSigner", err)
	}
	for name, trusted := range map[string]*trust.Bundle{
		"other root":      mustBundle(t, other.Certificate),
		"federated root":  mustBundle(t, fed.Certificate),
		"nothing trusted": nil,
	} {
		if err := b.VerifySignature(trusted, t0.Add(time.Minute)); !errors.Is(err, trust.ErrUntrustedSigner) {
			t.Errorf("%s: %v, want ErrUntrustedSigner", name, err)
		}
	}

	// The wire keeps the signature, and it still verifies.
	out, err := trust.TrustBundleFromProto(b.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	if err := out.VerifySignature(mustBundle(t, a.Certificate), t0.Add(time.Minute)); err != nil {
		t.Errorf("after a round trip: %v", err)
	}
	if !out.Equal(b) {
		t.Error("round trip changed the content")
	}

	// Equal ignores the signature; RefreshHint is not signed.
	unsigned := signedTestBundle(t, a, fed)
	if !unsigned.Equal(b) {
		t.Error("Equal looks at the signature")
	}
	out.RefreshHint = time.Hour
	if err := out.VerifySignature(mustBundle(t, a.Certificate), t0.Add(time.Minute)); err != nil {
		t.Errorf("a changed refresh hint broke the signature: %v", err)
	}
}

func TestTrustBundleSignatureCoversContent(t *testing.T) {
	a := testkit.Root(t, "root-a", t0, 24*time.Hour)
	rogue := testkit.Root(t, "root-rogue", t0, 24*time.Hour)
	fed := testkit.Root(t, "root-fed", t0, 24*time.Hour)
	trusted := mustBundle(t, a.Certificate)
	cases := map[string]func(b *trust.TrustBundle){
		"sequence":       func(b *trust.TrustBundle) { b.Sequence++ },
		"active root":    func(b *trust.TrustBundle) { b.ActiveRoot = trust.Fingerprint(rogue.Certificate) },
		"no active root": func(b *trust.TrustBundle) { b.ActiveRoot = [32]byte{} },
		"root added": func(b *trust.TrustBundle) {
			b.Domains[0].Roots = mustBundle(t, a.Certificate, rogue.Certificate)
		},
		"root replaced": func(b *trust.TrustBundle) { b.Domains[1].Roots = mustBundle(t, rogue.Certificate) },
		"federated set": func(b *trust.TrustBundle) { b.Domains[2].Federated = true },
		"federated cleared": func(b *trust.TrustBundle) {
			b.Domains[1].Federated = false
		},
		"domain renamed": func(b *trust.TrustBundle) {
			b.Domains[2].TrustDomain = spiffeid.RequireTrustDomainFromString("evil.example")
		},
		"domain added": func(b *trust.TrustBundle) {
			b.Domains = append(b.Domains, trust.DomainBundle{TrustDomain: spiffeid.RequireTrustDomainFromString("zz.example"), Roots: trusted})
		},
		"domain removed": func(b *trust.TrustBundle) { b.Domains = b.Domains[:2] },
		"signature flipped": func(b *trust.TrustBundle) {
			b.Signature = append([]byte(nil), b.Signature...)
			b.Signature[len(b.Signature)/2] ^= 1
		},
		"signature of another bundle": func(b *trust.TrustBundle) {
			o := signedTestBundle(t, a, fed)
			o.Sequence = 99
			if err := ca.SignTrustBundle(o, a.Signer, a.Certificate); err != nil {
				t.Fatal(err)
			}
			b.Signature = o.Signature
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			b := signedTestBundle(t, a, fed)
			if err := ca.SignTrustBundle(b, a.Signer, a.Certificate); err != nil {
				t.Fatal(err)
			}
			before := b.Digest()
			tamper(b)
			if err := b.VerifySignature(trusted, t0.Add(time.Minute)); !errors.Is(err, trust.ErrBadSignature) {
				t.Errorf("tampered bundle: %v, want ErrBadSignature", err)
			}
			if name != "signature flipped" && name != "signature of another bundle" && string(before) == string(b.Digest()) {
				t.Error("the digest did not change")
			}
		})
	}
}

func TestTrustBundleDigestIgnoresOrder(t *testing.T) {
	a := testkit.Root(t, "root-a", t0, 24*time.Hour)
	c := testkit.Root(t, "root-c", t0, 24*time.Hour)
	fed := testkit.Root(t, "root-fed", t0, 24*time.Hour)
	b := signedTestBundle(t, a, fed)
	b.Domains[0].Roots = mustBundle(t, a.Certificate, c.Certificate)
	reordered := signedTestBundle(t, a, fed)
	reordered.Domains[0].Roots = mustBundle(t, c.Certificate, a.Certificate)
	reordered.Domains[0], reordered.Domains[2] = reordered.Domains[2], reordered.Domains[0]
	if string(b.Digest()) != string(reordered.Digest()) {
		t.Error("the digest depends on the order of domains, roots or CRLs")
	}
}

func TestTrustBundleSignKeyTypes(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := rsaTestKey(t)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		hash crypto.Hash
	}{
		{"ecdsa p-256", testkit.Root(t, "root-a", t0, time.Hour).Signer, crypto.SHA256},
		{"ecdsa p-384", p384, crypto.SHA384},
		{"rsa", rsaKey, crypto.SHA256},
		{"ed25519", edKey, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := selfSigned(t, tc.key)
			// Only Sign is reachable, as with a Vault Transit key; it
			// checks the options it gets.
			remote := &opaqueSigner{key: tc.key}
			b := &trust.TrustBundle{Sequence: 1, ActiveRoot: trust.Fingerprint(cert), Domains: []trust.DomainBundle{
				{TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Roots: mustBundle(t, cert)},
			}}
			if err := ca.SignTrustBundle(b, remote, cert); err != nil {
				t.Fatal(err)
			}
			if remote.hash != tc.hash || remote.pss {
				t.Errorf("signed with hash %v (pss %v), want %v", remote.hash, remote.pss, tc.hash)
			}
			if err := b.VerifySignature(mustBundle(t, cert), t0.Add(time.Minute)); err != nil {
				t.Errorf("verify: %v", err)
			}
			b.Sequence++
			if err := b.VerifySignature(mustBundle(t, cert), t0.Add(time.Minute)); !errors.Is(err, trust.ErrBadSignature) {
				t.Errorf("tampered: %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestTrustBundleSignFailures(t *testing.T) {
	a := testkit.Root(t, "root-a", t0, 24*time.Hour)
	other := testkit.Root(t, "root-b", t0, 24*time.Hour)
	fed := testkit.Root(t, "root-fed", t0, 24*time.Hour)
	for name, signer := range map[string]crypto.Signer{
		"key of another root": other.Signer,
		"signer fails":        &opaqueSigner{key: a.Signer, err: errors.New("vault is sealed")},
		"garbage signature":   &opaqueSigner{key: a.Signer, garbage: true},
	} {
		t.Run(name, func(t *testing.T) {
			b := signedTestBundle(t, a, fed)
			if err := ca.SignTrustBundle(b, signer, a.Certificate); err == nil {
				t.Fatal("Sign succeeded")
			}
			if b.IsSigned() || b.Signer != ([32]byte{}) {
				t.Error("a failed Sign changed the bundle")
			}
		})
	}
}

// opaqueSigner exposes a key through crypto.Signer only, records the
// options it was called with and checks that the digest fits them.
type opaqueSigner struct {
	key     crypto.Signer
	err     error
	garbage bool

	mu   sync.Mutex
	hash crypto.Hash
	pss  bool
}

var _ crypto.Signer = (*opaqueSigner)(nil)

func (s *opaqueSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.mu.Lock()
	s.hash = opts.HashFunc()
	_, s.pss = opts.(*rsa.PSSOptions)
	s.mu.Unlock()
	if h := opts.HashFunc(); h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("digest of %d bytes for %v", len(digest), h)
	}
	if s.err != nil {
		return nil, s.err
	}
	if s.garbage {
		return []byte{0x30, 0x00}, nil
	}
	return s.key.Sign(r, digest, opts)
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
	rsaErr  error
)

func rsaTestKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() { rsaKey, rsaErr = rsa.GenerateKey(rand.Reader, 2048) })
	if rsaErr != nil {
		t.Fatal(rsaErr)
	}
	return rsaKey
}

// selfSigned returns a minimal self-signed CA certificate for key, of any
// key type.
func selfSigned(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: t0, NotAfter: t0.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}
	return testkit.Certificate(t, tmpl, tmpl, key.Public(), key)
}
