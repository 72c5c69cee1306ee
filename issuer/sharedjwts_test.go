package issuer_test

import (
	"crypto/x509"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// Two replicas of a standalone issuer each sign JWT-SVIDs with keys of
// their own: a JWT-SVID that replica B minted validates against the bundle
// replica A serves, and a key stored as if by a replica but certified
// under another root is never served.
func TestStandaloneReplicasServeEachOthersJWTKeys(t *testing.T) {
	tree, db, logs, a, b := twoReplicas(t)
	agent := bundleClient(t, serveIssuerConfig(t, issuer.ServerConfig{Issuer: a.iss, CRLs: a.shared, JWT: a.jwt, JWTAuthorities: a.jwts}), tree.Bundle.Pool())
	next := watchBundles(t, agent, 0)

	svid, err := b.jwt.Mint(t.Context(), issuer.JWTRequest{Token: goodToken, Audience: []string{"payments"}})
	if err != nil {
		t.Fatal(err)
	}
	if own, _ := a.jwt.Current(); slices.ContainsFunc(own, func(x trust.JWTAuthority) bool { return x.KeyID == svid.KeyID }) {
		t.Fatalf("replica A holds B's key %s itself: the replicas do not sign with keys of their own", svid.KeyID)
	}
	nextUntil(t, next, "A's bundle validates B's JWT-SVID", func(tb *trust.TrustBundle) error {
		_, err := jwtsvid.ParseAndValidate(svid.Token, jwtBundle(t, tb, tree.TrustDomain, tree.Bundle, time.Now()), []string{"payments"})
		return err
	})

	// A key certified by an intermediate of another root, stored as if a
	// replica had, is not served.
	other := testkit.New(t, testkit.Options{RootKey: "other-root", Cluster: "dev"})
	key := newKey(t)
	cert, err := other.Intermediate.SignJWTSigner(ca.JWTSignerRequest{PublicKey: &key.PublicKey, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := trust.JWTKeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutJWTAuthority(t.Context(), store.JWTAuthority{
		KeyID: kid, Cluster: "dev", TrustDomain: tree.TrustDomain.Name(), PublicKey: pub,
		Chain: [][]byte{cert.Raw, other.Intermediate.Certificate.Raw}, ExpiresAt: cert.NotAfter.UTC().Truncate(time.Second),
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "A refuses the forged key", func() error {
		if !strings.Contains(logs.String(), "not serving a stored JWT-SVID key") || !strings.Contains(logs.String(), kid) {
			return errNotYet
		}
		return nil
	})
	for i, r := range []*crlReplica{a, b} {
		served, _ := r.jwts.Current()
		if slices.ContainsFunc(served, func(x trust.JWTAuthority) bool { return x.KeyID == kid }) {
			t.Errorf("replica %d serves the forged key", i)
		}
		for _, x := range served {
			if err := trust.VerifyJWTAuthority(x, tree.TrustDomain, tree.Bundle, time.Now()); err != nil {
				t.Errorf("replica %d serves a key that does not verify under the local root: %v", i, err)
			}
		}
	}
}

func TestSharedJWTsConfigValidate(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	db, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	w := newWireOptions(t, wireOptions{jwt: &issuer.JWTConfig{}})
	good := func() issuer.SharedJWTsConfig {
		return issuer.SharedJWTsConfig{Own: w.keys, Store: db, Root: issuer.FixedCA(tree.Root), TrustDomain: tree.TrustDomain, Cluster: "dev"}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("a complete config: %v", err)
	}
	for name, tc := range map[string]struct {
		mod  func(*issuer.SharedJWTsConfig)
		want string
	}{
		"no own keys": {func(c *issuer.SharedJWTsConfig) { c.Own = nil }, "own keys and store are required"},
		"no store":    {func(c *issuer.SharedJWTsConfig) { c.Store = nil }, "own keys and store are required"},
		"no root":     {func(c *issuer.SharedJWTsConfig) { c.Root = nil }, "a CA root is required"},
		"leaf as root": {func(c *issuer.SharedJWTsConfig) {
			c.Root = issuer.FixedCA(&ca.Authority{Certificate: &x509.Certificate{}})
		}, "a CA root is required"},
		"no cluster":       {func(c *issuer.SharedJWTsConfig) { c.Cluster = "" }, "trust domain and cluster are required"},
		"negative poll":    {func(c *issuer.SharedJWTsConfig) { c.PollInterval = -time.Second }, "negative poll interval"},
		"negative timeout": {func(c *issuer.SharedJWTsConfig) { c.AttemptTimeout = -time.Second }, "negative poll interval or timeout"},
	} {
		c := good()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if _, err := issuer.NewSharedJWTs(c); err == nil {
			t.Errorf("%s: NewSharedJWTs accepted it", name)
		}
	}
}
