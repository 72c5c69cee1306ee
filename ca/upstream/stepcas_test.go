package upstream_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/steptest"
)

func stepConfig(s *steptest.Server) upstream.Config {
	return upstream.Config{Type: upstream.TypeStepCAS, StepCAS: upstream.StepCAS{
		URL: s.URL, Fingerprint: s.Fingerprint, Provisioner: steptest.Provisioner,
		ProvisionerType: upstream.ProvisionerJWK, KeyFile: s.KeyFile,
	}}
}

func newStep(t *testing.T, s *steptest.Server) *upstream.Authority {
	t.Helper()
	cfg := stepConfig(s)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := upstream.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("upstream.New: %v", err)
	}
	return a
}

// issueLeaf signs a cluster intermediate under meshca's CA (issued) and a
// workload certificate under it, and returns the leaf and the untrusted
// chain above it: cluster intermediate, meshca's CA, the upstream's
// intermediates.
func issueLeaf(t *testing.T, issued *upstream.Issued, caKey string) (*x509.Certificate, []*x509.Certificate) {
	t.Helper()
	meshCA, err := ca.NewAuthority(issued.Certificate, testkit.Key(t, caKey), issued.Chain...)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("upstream.test")
	ikey := testkit.Key(t, "cluster-intermediate")
	icert, err := meshCA.SignIntermediate(ca.IntermediateRequest{PublicKey: ikey.Public(), TrustDomain: td, Cluster: "east"})
	if err != nil {
		t.Fatalf("cluster intermediate: %v", err)
	}
	inter, err := ca.NewAuthority(icert, ikey)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse("spiffe://upstream.test/ns/default/sa/web")
	leaf, err := inter.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "workload").Public(), URIs: []*url.URL{id}, TTL: time.Hour})
	if err != nil {
		t.Fatalf("leaf: %v", err)
	}
	return leaf, append([]*x509.Certificate{icert, issued.Certificate}, issued.Chain...)
}

// verifyUnder checks leaf's chain against root alone, with Go's verifier
// and with openssl, as a relying party holding only the upstream root does.
func verifyUnder(t *testing.T, root *x509.Certificate, leaf *x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain {
		inters.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify under the upstream root: %v", err)
	}
	if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{root}, chain, leaf, time.Time{}); err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// Without the chain the leaf must not verify: the anchor alone does
	// not vouch for it.
	if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{root}, nil, leaf, time.Time{}); err == nil {
		t.Fatalf("openssl verified the leaf without its chain:\n%s", out)
	}
}

// TestStepCASIssuesMeshCA obtains meshca's CA certificate from a real
// step-ca, signs a cluster intermediate and a workload certificate under
// it, and verifies the workload certificate as a relying party that holds
// only step-ca's root. A second CA on a new key (a rotation) chains to the
// same anchor, and the first CA's certificates stay valid beside it.
func TestStepCASIssuesMeshCA(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	a := newStep(t, s)
	first, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1"), CommonName: "meshca CA"})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if !first.Root.Equal(s.Root) {
		t.Fatalf("trust anchor %q is not step-ca's root", first.Root.Subject)
	}
	if len(first.Chain) != 1 || first.Chain[0].Subject.CommonName != "test upstream intermediate" {
		t.Fatalf("chain %v, want step-ca's intermediate", first.Chain)
	}
	c := first.Certificate
	if !c.IsCA || c.MaxPathLen != 1 || c.Subject.CommonName != "meshca CA" || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("meshca's CA certificate: isCA %v, path length %d, subject %q", c.IsCA, c.MaxPathLen, c.Subject)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < upstream.DefaultTTL-time.Hour || life > upstream.DefaultTTL+time.Hour {
		t.Errorf("lifetime %v, want %v", life, upstream.DefaultTTL)
	}
	leaf1, chain1 := issueLeaf(t, first, "meshca-ca-1")
	verifyUnder(t, s.Root, leaf1, chain1)

	second, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-2"), CommonName: "meshca CA"})
	if err != nil {
		t.Fatalf("Issue (rotation): %v", err)
	}
	if second.Certificate.Equal(first.Certificate) || !second.Root.Equal(first.Root) {
		t.Fatal("the rotated CA is the same certificate, or under another anchor")
	}
	leaf2, chain2 := issueLeaf(t, second, "meshca-ca-2")
	verifyUnder(t, s.Root, leaf2, chain2)
	verifyUnder(t, s.Root, leaf1, chain1)
}

// TestStepCASX5C obtains meshca's CA certificate through step-ca's X5C
// provisioner: tokens signed by a key whose certificate chains to the
// provisioner's roots.
func TestStepCASX5C(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	cfg := upstream.Config{Type: upstream.TypeStepCAS, StepCAS: upstream.StepCAS{
		URL: s.URL, Fingerprint: s.Fingerprint, Provisioner: steptest.X5CProvisioner,
		ProvisionerType: upstream.ProvisionerX5C, CertFile: s.X5CCertFile, KeyFile: s.X5CKeyFile,
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := upstream.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("upstream.New: %v", err)
	}
	issued, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	leaf, chain := issueLeaf(t, issued, "meshca-ca-1")
	verifyUnder(t, s.Root, leaf, chain)
}

// TestStepCASOutage stops step-ca: obtaining a CA certificate fails as
// unavailable while the CA already held keeps signing, and succeeds again
// once step-ca is back.
func TestStepCASOutage(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	a := newStep(t, s)
	held, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	s.Stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := a.Issue(ctx, upstream.Request{Signer: testkit.Key(t, "meshca-ca-2")}); !errors.Is(err, grpcx.ErrUnavailable) {
		t.Fatalf("Issue with step-ca down = %v, want ErrUnavailable", err)
	}
	leaf, chain := issueLeaf(t, held, "meshca-ca-1")
	verifyUnder(t, s.Root, leaf, chain)

	s.Restart(t)
	renewed, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-2")})
	if err != nil {
		t.Fatalf("Issue after step-ca came back: %v", err)
	}
	leaf, chain = issueLeaf(t, renewed, "meshca-ca-2")
	verifyUnder(t, s.Root, leaf, chain)
}

// TestStepCASRefusesUnusableAnswers runs step-ca set up the wrong way for
// meshca: a provisioner with step-ca's leaf template, and step-ca's own
// intermediate with path length 0. Issue refuses what comes back.
func TestStepCASRefusesUnusableAnswers(t *testing.T) {
	cases := []struct {
		name string
		opts steptest.Options
		err  string
	}{
		{"leaf template", steptest.Options{Template: steptest.LeafTemplate}, "not a CA certificate"},
		{"intermediate path length 0", steptest.Options{IntermediatePathLen: -1}, "path length"},
		{"provisioner maximum below the lifetime asked", steptest.Options{MaxTTL: 48 * time.Hour}, "more than the authorized maximum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := steptest.Start(t, tc.opts)
			_, err := newStep(t, s).Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")})
			t.Logf("Issue: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Issue() = %v, want an error containing %q", err, tc.err)
			}
			if !errors.Is(err, upstream.ErrBadCertificate) && !errors.Is(err, upstream.ErrRefused) {
				t.Fatalf("Issue() = %v, want ErrBadCertificate or ErrRefused", err)
			}
			if errors.Is(err, grpcx.ErrUnavailable) {
				t.Fatalf("Issue() = %v: a refusal or a bad answer is not an outage", err)
			}
		})
	}
}

// TestStepCASWrongFingerprint: a fingerprint that is not step-ca's root's
// fails at New, before any key or CSR is sent.
func TestStepCASWrongFingerprint(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	cfg := stepConfig(s)
	cfg.StepCAS.Fingerprint = strings.Repeat("ab", 32)
	a, err := upstream.New(t.Context(), cfg)
	if err == nil {
		_, err = a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")})
	}
	if err == nil {
		t.Fatal("a wrong step-ca fingerprint was accepted")
	}
}
