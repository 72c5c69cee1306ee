package trust_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// jwtAuthority returns the JWT authority of key under tree's intermediate
// (cluster "test"), its certificate valid for a day from t0.
func jwtAuthority(t *testing.T, tree *testkit.Tree, key crypto.Signer) trust.JWTAuthority {
	t.Helper()
	cert, err := tree.Intermediate.SignJWTSigner(ca.JWTSignerRequest{PublicKey: key.Public(), NotAfter: t0.Add(24 * time.Hour), Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	return authorityOf(t, cert, key.Public(), tree.Intermediate.Certificate)
}

func authorityOf(t *testing.T, cert *x509.Certificate, pub crypto.PublicKey, above ...*x509.Certificate) trust.JWTAuthority {
	t.Helper()
	kid, err := trust.JWTKeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{cert.Raw}
	for _, c := range above {
		chain = append(chain, c.Raw)
	}
	return trust.JWTAuthority{KeyID: kid, PublicKey: pub, ExpiresAt: cert.NotAfter, Chain: chain}
}

func TestSignJWTSignerProfile(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	key := testkit.Key(t, "jwt-a")
	cert, err := tree.Intermediate.SignJWTSigner(ca.JWTSignerRequest{PublicKey: key.Public(), Now: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature || len(cert.ExtKeyUsage) != 0 {
		t.Errorf("IsCA=%v KeyUsage=%v ExtKeyUsage=%v, want a signing end entity", cert.IsCA, cert.KeyUsage, cert.ExtKeyUsage)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://cluster.local/meshca/jwt/test" {
		t.Errorf("URIs = %v", cert.URIs)
	}
	if !cert.NotAfter.Equal(tree.Intermediate.Certificate.NotAfter) {
		t.Errorf("NotAfter = %v, want the intermediate's %v (zero NotAfter)", cert.NotAfter, tree.Intermediate.Certificate.NotAfter)
	}
	late := tree.Intermediate.Certificate.NotAfter.Add(time.Hour)
	if cert, err = tree.Intermediate.SignJWTSigner(ca.JWTSignerRequest{PublicKey: key.Public(), NotAfter: late, Now: t0}); err != nil || !cert.NotAfter.Equal(tree.Intermediate.Certificate.NotAfter) {
		t.Errorf("a NotAfter past the intermediate's must be clamped to it: %v, %v", cert, err)
	}
	if _, err := tree.Intermediate.SignJWTSigner(ca.JWTSignerRequest{PublicKey: key.Public(), Now: late}); err == nil {
		t.Error("an expired intermediate signed a JWT signer certificate")
	}
	if _, err := tree.Root.SignJWTSigner(ca.JWTSignerRequest{PublicKey: key.Public(), Now: t0}); err == nil {
		t.Error("a root, which names no cluster, signed a JWT signer certificate")
	}
}

func TestVerifyJWTAuthority(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	other := testkit.New(t, testkit.Options{Now: t0, RootKey: "root-other"})
	key, key2 := testkit.Key(t, "jwt-a"), testkit.Key(t, "jwt-b")
	now := t0.Add(time.Hour)
	good := jwtAuthority(t, tree, key)
	if err := trust.VerifyJWTAuthority(good, tree.TrustDomain, tree.Bundle, now); err != nil {
		t.Fatalf("a good authority was refused: %v", err)
	}
	noExpiry := good
	noExpiry.ExpiresAt = time.Time{}
	if err := trust.VerifyJWTAuthority(noExpiry, tree.TrustDomain, tree.Bundle, now); err != nil {
		t.Fatalf("an authority without ExpiresAt was refused: %v", err)
	}

	leafWith := func(uri string) trust.JWTAuthority {
		u, _ := url.Parse(uri)
		cert, err := tree.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{u}, TTL: time.Hour, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		return authorityOf(t, cert, key.Public(), tree.Intermediate.Certificate)
	}
	cases := map[string]struct {
		a    trust.JWTAuthority
		td   string
		want string
	}{
		"wrong URI":                   {a: leafWith("spiffe://cluster.local/meshca/issuer/test"), want: "does not name"},
		"workload leaf as authority":  {a: leafWith("spiffe://cluster.local/ns/default/sa/web"), want: "does not name"},
		"signer of another cluster":   {a: leafWith("spiffe://cluster.local/meshca/jwt/other"), want: "does not name spiffe://cluster.local/meshca/jwt/test"},
		"wrong trust domain":          {a: good, td: "other.example", want: "of its trust domain"},
		"untrusted root":              {a: jwtAuthority(t, other, key), want: "unknown authority"},
		"CA certificate as authority": {a: authorityOf(t, tree.Intermediate.Certificate, tree.Intermediate.Signer.Public()), want: "not a signing end entity"},
		"no chain":                    {a: trust.JWTAuthority{KeyID: good.KeyID, PublicKey: key.Public()}, want: "no certificate chain"},
		"key mismatch": {a: func() trust.JWTAuthority {
			a := good
			a.PublicKey = key2.Public()
			a.KeyID, _ = trust.JWTKeyID(key2.Public())
			return a
		}(), want: "not its certificate's"},
		"kid mismatch": {a: func() trust.JWTAuthority {
			a := good
			a.KeyID, _ = trust.JWTKeyID(key2.Public())
			return a
		}(), want: "does not name its key"},
		"expired": {a: func() trust.JWTAuthority {
			a := good
			a.ExpiresAt = now
			return a
		}(), want: "expired"},
		"outlives its certificate": {a: func() trust.JWTAuthority {
			a := good
			a.ExpiresAt = a.ExpiresAt.Add(time.Second)
			return a
		}(), want: "outlives"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			td := tree.TrustDomain
			if c.td != "" {
				td = spiffeid.RequireTrustDomainFromString(c.td)
			}
			err := trust.VerifyJWTAuthority(c.a, td, tree.Bundle, now)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("VerifyJWTAuthority = %v, want an error containing %q", err, c.want)
			}
		})
	}
	t.Run("certificate expired", func(t *testing.T) {
		if err := trust.VerifyJWTAuthority(noExpiry, tree.TrustDomain, tree.Bundle, t0.Add(25*time.Hour)); err == nil {
			t.Fatal("an authority whose certificate expired was accepted")
		}
	})
}

func TestJWTAuthorityProtoRoundTrip(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	a := jwtAuthority(t, tree, testkit.Key(t, "jwt-a"))
	pa, err := a.ToProto()
	if err != nil {
		t.Fatal(err)
	}
	back, err := trust.JWTAuthorityFromProto(pa)
	if err != nil {
		t.Fatal(err)
	}
	if back.KeyID != a.KeyID || !back.ExpiresAt.Equal(a.ExpiresAt) || !slices.EqualFunc(back.Chain, a.Chain, bytes.Equal) {
		t.Fatalf("round trip changed the authority: %+v", back)
	}
	if err := trust.VerifyJWTAuthority(back, tree.TrustDomain, tree.Bundle, t0.Add(time.Hour)); err != nil {
		t.Fatalf("the decoded authority does not verify: %v", err)
	}

	fedRoots, _ := trust.NewBundle(testkit.Root(t, "root-b", t0, 24*time.Hour).Certificate)
	fedKey := testkit.Key(t, "jwt-b").Public()
	in := &trust.TrustBundle{Sequence: 7, Domains: []trust.DomainBundle{
		{TrustDomain: tree.TrustDomain, Roots: tree.Bundle, JWTAuthorities: []trust.JWTAuthority{a}},
		{TrustDomain: spiffeid.RequireTrustDomainFromString("partner.example"), Roots: fedRoots, Federated: true,
			JWTAuthorities: []trust.JWTAuthority{{KeyID: "partner-key-1", PublicKey: fedKey}}},
	}}
	out, err := trust.TrustBundleFromProto(in.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	if !in.Equal(out) {
		t.Fatalf("bundle round trip changed the JWT authorities: %+v", out.Domains)
	}
	changed := *out
	changed.Domains = slices.Clone(out.Domains)
	changed.Domains[0].JWTAuthorities = nil
	if in.Equal(&changed) {
		t.Fatal("Equal ignores JWT authorities")
	}

	bad := []func(){
		func() { pa.KeyId = "" },
		func() { pa.PublicKey = []byte{0x30, 0x01} },
	}
	for i, spoil := range bad {
		pa, _ = a.ToProto()
		spoil()
		if _, err := trust.JWTAuthorityFromProto(pa); err == nil {
			t.Errorf("case %d: a broken authority decoded", i)
		}
	}
}

// digestBeforeJWT is Digest as it was before bundles carried JWT
// authorities; bundles without federated JWT authorities must keep it, or
// every signed bundle already in the field would stop verifying.
func digestBeforeJWT(b *trust.TrustBundle) []byte {
	var buf bytes.Buffer
	count := func(n int) { buf.Write(binary.BigEndian.AppendUint32(nil, uint32(n))) }
	bytesOf := func(p []byte) { count(len(p)); buf.Write(p) }
	buf.WriteString("meshca-bundle-v2\x00")
	buf.Write(binary.BigEndian.AppendUint64(nil, b.Sequence))
	buf.Write(b.ActiveRoot[:])
	domains := slices.Clone(b.Domains)
	slices.SortStableFunc(domains, func(x, y trust.DomainBundle) int { return strings.Compare(x.TrustDomain.Name(), y.TrustDomain.Name()) })
	count(len(domains))
	for _, d := range domains {
		bytesOf([]byte(d.TrustDomain.Name()))
		if d.Federated {
			buf.WriteByte(1)
		} else {
			buf.WriteByte(0)
		}
		var roots [][]byte
		for _, r := range d.Roots.Roots() {
			roots = append(roots, r.Raw)
		}
		slices.SortFunc(roots, bytes.Compare)
		count(len(roots))
		for _, r := range roots {
			bytesOf(r)
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	return sum[:]
}

func TestDigestAndJWTAuthorities(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: t0})
	fedRoots, _ := trust.NewBundle(testkit.Root(t, "root-b", t0, 24*time.Hour).Certificate)
	partner := spiffeid.RequireTrustDomainFromString("partner.example")
	bundle := func(own, fed []trust.JWTAuthority) *trust.TrustBundle {
		return &trust.TrustBundle{Sequence: 9, ActiveRoot: trust.Fingerprint(tree.Root.Certificate), Domains: []trust.DomainBundle{
			{TrustDomain: tree.TrustDomain, Roots: tree.Bundle, JWTAuthorities: own},
			{TrustDomain: partner, Roots: fedRoots, Federated: true, JWTAuthorities: fed},
		}}
	}
	plain := bundle(nil, nil)
	if !bytes.Equal(plain.Digest(), digestBeforeJWT(plain)) {
		t.Fatal("the digest of a bundle without JWT authorities changed")
	}
	own := jwtAuthority(t, tree, testkit.Key(t, "jwt-a"))
	if withOwn := bundle([]trust.JWTAuthority{own}, nil); !bytes.Equal(withOwn.Digest(), plain.Digest()) {
		t.Error("an own domain's JWT authority changed the digest; issuers could not add theirs to the root's signed bundle")
	}
	fedA := trust.JWTAuthority{KeyID: "k1", PublicKey: testkit.Key(t, "jwt-b").Public(), ExpiresAt: t0.Add(time.Hour)}
	base := bundle(nil, []trust.JWTAuthority{fedA}).Digest()
	if bytes.Equal(base, plain.Digest()) {
		t.Fatal("a federated domain's JWT authority is not covered by the digest")
	}
	variants := map[string]trust.JWTAuthority{
		"key":       {KeyID: "k1", PublicKey: testkit.Key(t, "jwt-c").Public(), ExpiresAt: fedA.ExpiresAt},
		"key ID":    {KeyID: "k2", PublicKey: fedA.PublicKey, ExpiresAt: fedA.ExpiresAt},
		"expiry":    {KeyID: "k1", PublicKey: fedA.PublicKey, ExpiresAt: fedA.ExpiresAt.Add(time.Hour)},
		"no expiry": {KeyID: "k1", PublicKey: fedA.PublicKey},
	}
	for name, v := range variants {
		if bytes.Equal(bundle(nil, []trust.JWTAuthority{v}).Digest(), base) {
			t.Errorf("changing a federated authority's %s leaves the digest unchanged", name)
		}
	}
	if bytes.Equal(bundle(nil, []trust.JWTAuthority{fedA, variants["key ID"]}).Digest(), base) {
		t.Error("adding a federated authority leaves the digest unchanged")
	}
	if !bytes.Equal(bundle(nil, []trust.JWTAuthority{variants["key ID"], fedA}).Digest(),
		bundle(nil, []trust.JWTAuthority{fedA, variants["key ID"]}).Digest()) {
		t.Error("the digest depends on the order of federated authorities")
	}
}
