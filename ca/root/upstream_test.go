package root

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/test/steptest"
	"github.com/meshca/meshca/test/vaulttest"
	"github.com/meshca/meshca/trust"
)

// upstreamTTL is what the root asks step-ca for: long enough that a clock
// moved to the renewal threshold still leaves upstream.MinTTL.
const upstreamTTL = 240 * time.Hour

func stepUpstream(t *testing.T, s *steptest.Server) *upstream.Authority {
	t.Helper()
	a, err := upstream.New(t.Context(), upstream.Config{Type: upstream.TypeStepCAS, TTL: upstreamTTL, StepCAS: upstream.StepCAS{
		URL: s.URL, Fingerprint: s.Fingerprint, Provisioner: steptest.Provisioner,
		ProvisionerType: upstream.ProvisionerJWK, KeyFile: s.KeyFile,
	}})
	if err != nil {
		t.Fatalf("upstream.New: %v", err)
	}
	return a
}

// enrollChain enrols a new cluster and returns the issuer's side with the
// authority of its intermediate, chain included.
func (h *harness) enrollChain(addr, cluster, td string) (*issuerSide, *ca.Authority) {
	h.t.Helper()
	s := &issuerSide{credKey: newKey(h.t), interKey: newKey(h.t)}
	resp, err := meshcav1.NewRootServiceClient(h.dialAnchors(addr)).Enroll(context.Background(), &meshcav1.EnrollRequest{
		JoinToken: h.addCluster(cluster, td), CredentialCsr: csrFor(h.t, s.credKey), IntermediateCsr: csrFor(h.t, s.interKey),
	})
	if err != nil {
		h.t.Fatalf("enrol %s: %v", cluster, err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.GetIntermediateChain() {
		chain = append(chain, mustParse(h.t, der))
	}
	s.inter, s.cred = chain[0], mustParse(h.t, resp.GetCredentialChain()[0])
	if s.bundle, err = trust.TrustBundleFromProto(resp.GetBundle()); err != nil {
		h.t.Fatal(err)
	}
	a, err := ca.NewAuthority(s.inter, s.interKey, chain[1:]...)
	if err != nil {
		h.t.Fatal(err)
	}
	return s, a
}

// dialAnchors connects trusting the bundle's anchors only, as an issuer
// configured with the upstream root does.
func (h *harness) dialAnchors(addr string) *grpc.ClientConn {
	h.t.Helper()
	b, _ := h.root.Current()
	return h.dialPool(addr, b.OwnRoots().Pool(), nil)
}

// TestUpstreamRoot runs the root under a real step-ca: its CA certificate
// and every renewal come from step-ca for a key the root holds, the bundle
// anchors on step-ca's root with meshca's CA as its authority, and a
// workload certificate under a cluster intermediate verifies with openssl
// holding only step-ca's root. A rotation by the administrator and an
// automatic renewal both go through prepared and active; with step-ca
// down the active CA keeps signing and the renewal is retried with
// backoff until step-ca is back.
func TestUpstreamRoot(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	h := newHarness(t, func(c *Config) { c.Upstream = stepUpstream(t, s); c.TrustDomains = []string{"east.example"} })
	first := h.activeRoot()
	wantUpstreamBundle(t, h, s.Root, first)

	addr := h.serve()
	_, inter := h.enrollChain(addr, "east", "east.example")
	leaf, err := inter.SignLeaf(ca.LeafRequest{PublicKey: newKey(t).Public(),
		URIs: []*url.URL{spiffeid.RequireFromString("spiffe://east.example/ns/default/sa/web").URL()}, TTL: time.Hour, Now: h.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if len(inter.Chain) < 1 || !inter.Chain[0].Equal(first) {
		t.Fatalf("intermediate chain does not start with meshca's CA: %d certificates", len(inter.Chain))
	}
	opensslVerify(t, s.Root, leaf, append([]*x509.Certificate{inter.Certificate}, inter.Chain...))

	// The administrator rotates: a second CA from step-ca, prepared first.
	next, err := h.root.rotate(context.Background(), 0, "admin:test", false)
	if err != nil || next.State != RootPrepared || next.Anchor == nil || !next.Anchor.Equal(s.Root) {
		t.Fatalf("rotate under the upstream: %+v, %v", next.State, err)
	}
	h.clock.Advance(h.cfg.PropagationDelay + time.Second)
	h.refresh()
	if !h.activeRoot().Equal(next.Cert) {
		t.Fatal("the rotated CA did not become active")
	}
	wantUpstreamBundle(t, h, s.Root, first, next.Cert)
	if _, a := h.enrollChain(addr, "west", "west.example"); !a.Chain[0].Equal(next.Cert) {
		t.Fatal("a new intermediate is not under the rotated CA")
	}

	// Renewal is due at a third of the life left; step-ca is down.
	s.Stop(t)
	active := h.activeRoot()
	h.clock.Advance(active.NotAfter.Add(-active.NotAfter.Sub(active.NotBefore)/3 + time.Minute).Sub(h.clock.Now()))
	before := len(h.root.Roots())
	h.refresh()
	h.refresh() // within the backoff: no second request
	if got := len(h.root.Roots()); got != before {
		t.Fatalf("a root was added with step-ca down: %d roots, had %d", got, before)
	}
	if n := strings.Count(h.logs.String(), "renewing meshca's CA certificate from the upstream PKI failed"); n != 1 {
		t.Fatalf("%d failed renewals logged, want 1 (the second refresh is within the backoff):\n%s", n, h.logs.String())
	}
	if !h.activeRoot().Equal(active) {
		t.Fatal("the active CA changed while step-ca was down")
	}
	h.enrollChain(addr, "south", "south.example") // issuance continues

	s.Restart(t)
	h.clock.Advance(rotation.MaxCABackoff)
	h.refresh()
	st := h.root.Roots()
	last := st[len(st)-1]
	if len(st) != before+1 || last.State != RootPrepared || last.Anchor == nil || !last.Anchor.Equal(s.Root) {
		t.Fatalf("no renewal from step-ca after its restart: %d roots (had %d), last %s", len(st), before, last.State)
	}
	// The store keeps the certificate and its upstream chain in one row.
	rows, err := h.db.Roots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		ders, err := store.SplitDER(row.DER)
		if err != nil || len(ders) < 2 {
			t.Fatalf("stored root %s: %d certificates, %v; want the CA and its upstream chain", row.Fingerprint, len(ders), err)
		}
	}
}

// wantUpstreamBundle checks the published bundle: anchored on root only,
// with meshca's CAs (want) as its authorities and signed by the active one.
func wantUpstreamBundle(t *testing.T, h *harness, root *x509.Certificate, want ...*x509.Certificate) {
	t.Helper()
	b, _ := h.root.Current()
	if got := b.OwnRoots().Roots(); len(got) != 1 || !got[0].Equal(root) {
		t.Fatalf("bundle roots: %d certificates, want step-ca's root alone", len(got))
	}
	auth := b.OwnAuthorities().Roots()
	if len(auth) != len(want) {
		t.Fatalf("bundle authorities: %d, want %d", len(auth), len(want))
	}
	for i := range want {
		if !auth[i].Equal(want[i]) {
			t.Fatalf("bundle authority %d is not meshca's CA", i)
		}
	}
	if err := b.VerifySignature(b.OwnAuthorities(), h.clock.Now()); err != nil {
		t.Fatalf("bundle signature: %v", err)
	}
	// A round trip through the wire keeps the split.
	rt, err := trust.TrustBundleFromProto(b.ToProto())
	if err != nil || !rt.Equal(b) || rt.VerifySignature(b.OwnAuthorities(), h.clock.Now()) != nil {
		t.Fatalf("bundle after the wire: %v", err)
	}
}

func opensslVerify(t *testing.T, root, leaf *x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{root}, chain, leaf, time.Time{}); err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

// TestUpstreamCertificatesAreNotMeshca is the attack: a CA the same step-ca
// issues to someone else (through the same provisioner) mints an issuer
// credential, an admin certificate, a root serving certificate and a
// trust bundle signature. Each chains to the trust anchor, and each is
// refused, because the checks ask for a parent among meshca's own CAs.
func TestUpstreamCertificatesAreNotMeshca(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	up := stepUpstream(t, s)
	h := newHarness(t, func(c *Config) { c.Upstream = up; c.TrustDomains = []string{"east.example"} })
	addr := h.serve()
	east, _ := h.enrollChain(addr, "east", "east.example")

	otherKey := newKey(t)
	other, err := up.Issue(t.Context(), upstream.Request{Signer: otherKey, CommonName: "meshca CA", Now: h.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	evil, err := ca.NewAuthority(other.Certificate, otherKey, other.Chain...)
	if err != nil {
		t.Fatal(err)
	}
	evilChain := append([]*x509.Certificate{other.Certificate}, other.Chain...)
	sign := func(uri *url.URL, eku x509.ExtKeyUsage) (*x509.Certificate, any) {
		key := newKey(t)
		c, err := evil.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{uri}, TTL: time.Hour, Now: h.clock.Now(),
			ExtKeyUsage: []x509.ExtKeyUsage{eku}})
		if err != nil {
			t.Fatal(err)
		}
		return c, key
	}

	t.Run("issuer credential", func(t *testing.T) {
		id := spiffeid.RequireFromString("spiffe://east.example/meshca/cluster/east")
		cred, key := sign(id.URL(), x509.ExtKeyUsageClientAuth)
		cert := &tls.Certificate{PrivateKey: key, Leaf: cred, Certificate: [][]byte{cred.Raw}}
		for _, c := range evilChain {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		b, _ := h.root.Current()
		conn := h.dialPool(addr, b.OwnRoots().Pool(), cert)
		_, err := meshcav1.NewRootServiceClient(conn).Renew(context.Background(), &meshcav1.RenewRequest{
			IntermediateCsr: csrFor(t, newKey(t)), CredentialCsr: csrFor(t, newKey(t))})
		c := status.Code(err)
		if c != codes.Unauthenticated && c != codes.Unavailable {
			t.Fatalf("Renew with a credential from the upstream: %v; want it refused", err)
		}
		if !strings.Contains(h.logs.String(), "not signed directly by a root") && c != codes.Unavailable {
			t.Fatalf("no reason logged:\n%s", h.logs.String())
		}
		// The genuine credential still renews, so the refusal is the
		// forged credential's.
		if _, err := meshcav1.NewRootServiceClient(h.dialPool(addr, b.OwnRoots().Pool(), east.tlsCert())).Renew(context.Background(),
			&meshcav1.RenewRequest{IntermediateCsr: csrFor(t, newKey(t)), CredentialCsr: csrFor(t, newKey(t))}); err != nil {
			t.Fatalf("Renew with the genuine credential: %v", err)
		}
	})
	t.Run("admin certificate", func(t *testing.T) {
		cert, key := sign(spiffeid.RequireFromString(opsAdmin).URL(), x509.ExtKeyUsageClientAuth)
		client := h.mtlsAdminClient(h.serveAdminMTLS(), key, append([]*x509.Certificate{cert}, evilChain...)...)
		_, err := client.AddCluster(context.Background(), &meshcav1.AddClusterRequest{Name: "west", TrustDomain: "west.example"})
		if err == nil {
			t.Fatal("an admin certificate from the upstream registered a cluster")
		}
		if _, err := h.db.Cluster(context.Background(), "west"); err == nil {
			t.Fatal("cluster west was registered")
		}
	})
	t.Run("root serving certificate", func(t *testing.T) {
		cert, _ := sign(trust.RootServerURI, x509.ExtKeyUsageServerAuth)
		chain := append(append([]*x509.Certificate{cert}, evilChain...), s.Root)
		own := h.root.OwnAuthorities()
		if err := (trust.ServerCheck{Root: true, Authorities: own}).VerifyChain(chain); !errors.Is(err, trust.ErrWrongServer) {
			t.Fatalf("a serving certificate from the upstream passed as the root's: %v", err)
		}
		if err := (trust.ServerCheck{Root: true}).VerifyChain(chain); !errors.Is(err, trust.ErrWrongServer) {
			t.Fatalf("without authorities, a serving certificate from the upstream passed as the root's: %v", err)
		}
	})
	t.Run("bundle signature", func(t *testing.T) {
		b, _ := h.root.Current()
		forged := *b
		forged.Sequence++
		forged.Domains = append([]trust.DomainBundle(nil), b.Domains...)
		auth, err := trust.NewBundle(append(forged.Domains[0].Authorities.Roots(), other.Certificate)...)
		if err != nil {
			t.Fatal(err)
		}
		forged.Domains[0].Authorities = auth
		if err := ca.SignTrustBundle(&forged, otherKey, other.Certificate); err != nil {
			t.Fatal(err)
		}
		if err := forged.VerifySignature(b.OwnAuthorities(), h.clock.Now()); !errors.Is(err, trust.ErrUntrustedSigner) {
			t.Fatalf("a bundle signed by a CA from the upstream: %v; want ErrUntrustedSigner", err)
		}
		// The genuine signer still verifies, so the refusal above is the
		// signer's.
		if err := b.VerifySignature(b.OwnAuthorities(), h.clock.Now()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestUpstreamRootVaultPKI runs the root under a real Vault PKI mount
// (vaultpki): the bundle anchors on the mount's root, meshca's CA is its
// authority, a workload certificate under a cluster intermediate verifies
// with openssl against Vault's root alone, and an administrator's rotation
// gets the next CA from Vault.
func TestUpstreamRootVaultPKI(t *testing.T) {
	v := vaulttest.Start(t)
	ctx := t.Context()
	mount := vaulttest.KeyName(t)
	if err := v.Admin.Sys().MountWithContext(ctx, mount, &vaultapi.MountInput{
		Type: "pki", Config: vaultapi.MountConfigInput{MaxLeaseTTL: "87600h"},
	}); err != nil {
		t.Fatalf("mount pki: %v", err)
	}
	gen, err := v.Admin.Logical().WriteWithContext(ctx, mount+"/root/generate/internal",
		map[string]any{"common_name": "vault upstream root", "ttl": "87600h", "key_type": "ec", "key_bits": 256})
	if err != nil {
		t.Fatalf("generate root: %v", err)
	}
	block, _ := pem.Decode([]byte(gen.Data["certificate"].(string)))
	if block == nil {
		t.Fatal("no root certificate in Vault's answer")
	}
	vaultRoot := mustParse(t, block.Bytes)
	role := v.AppRole(t, mount, fmt.Sprintf(`
path "%[1]s/issuer/default/sign-intermediate" { capabilities = ["update"] }
path "%[1]s/issuer/default/json" { capabilities = ["read"] }
`, mount), nil)
	up, err := upstream.New(ctx, upstream.Config{Type: upstream.TypeVaultPKI, TTL: upstreamTTL, VaultPKI: upstream.VaultPKI{
		Address: v.Addr, CACertFile: v.CAFile, Mount: mount,
		Auth: vault.AuthConfig{Method: vault.AuthAppRole, AppRole: vault.AppRoleConfig{
			RoleID: role.RoleID, SecretIDFile: role.SecretIDFile, Mount: role.Mount}},
	}})
	if err != nil {
		t.Fatalf("upstream.New: %v", err)
	}
	t.Cleanup(func() { _ = up.Close() })

	h := newHarness(t, func(c *Config) { c.Upstream = up; c.TrustDomains = []string{"east.example"} })
	first := h.activeRoot()
	wantUpstreamBundle(t, h, vaultRoot, first)
	_, inter := h.enrollChain(h.serve(), "east", "east.example")
	leaf, err := inter.SignLeaf(ca.LeafRequest{PublicKey: newKey(t).Public(),
		URIs: []*url.URL{spiffeid.RequireFromString("spiffe://east.example/ns/default/sa/web").URL()}, TTL: time.Hour, Now: h.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, vaultRoot, leaf, append([]*x509.Certificate{inter.Certificate}, inter.Chain...))

	next, err := h.root.rotate(ctx, 0, "admin:test", false)
	if err != nil || next.Anchor == nil || !next.Anchor.Equal(vaultRoot) {
		t.Fatalf("rotate under Vault PKI: %v", err)
	}
	wantUpstreamBundle(t, h, vaultRoot, first, next.Cert)
}
