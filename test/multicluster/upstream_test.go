package multicluster

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/meshca/meshca/agent/sdstest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/steptest"
)

// TestRootUnderStepCA runs `meshca root serve` with its CA certificate
// from a real step-ca, an issuer under it and a workload: the workload's
// certificate chain ends at step-ca's root and openssl accepts it holding
// only that root; the agent gives the workload step-ca's root as its anchor
// (Workload API bundle and SDS ROOTCA), and the chain verifies against the
// root it serves. A rotation of meshca's CA goes to step-ca again and
// issuance continues under the new CA; with step-ca stopped the rotation
// fails (the cause in the root's log) while the workload keeps being renewed, and once
// step-ca is back the rotation succeeds.
func TestRootUnderStepCA(t *testing.T) {
	s := steptest.Start(t, steptest.Options{})
	root := startRoot(t, fmt.Sprintf(`rotation: {propagationDelay: 3s}
upstream:
  type: stepcas
  ttl: 240h
  stepcas: {url: %q, fingerprint: %s, provisioner: %s, provisionerType: jwk, keyFile: %s}
`, s.URL, s.Fingerprint, steptest.Provisioner, s.KeyFile))
	east := startIssuer(t, root, "east", "east.example", "")
	w := startWorkload(t, east, root.BundlePath(), "shop", "frontend", 6*time.Second)
	first := activeRoot(t, root)
	wantUnderStepCA(t, s, w, first)
	wantAnchoredOnStepCA(t, s, w)

	// meshca's CA rotates under step-ca; the issuer moves under the new
	// one and the workload's chain still ends at step-ca's root.
	if err := root.admin(t, nil, "root", "rotate"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new CA active", 60*time.Second, func() bool { r := activeRoot(t, root); return r != "" && r != first })
	second := activeRoot(t, root)
	waitUntil(t, "the workload's certificate under the new CA", 120*time.Second, func() bool { return caOf(t, w) == second })
	wantUnderStepCA(t, s, w, second)
	wantAnchoredOnStepCA(t, s, w)

	// step-ca down: rotating fails, issuance under the current CA goes on.
	s.Stop(t)
	err := root.admin(t, nil, "root", "rotate", "--force")
	if err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("root rotate with step-ca stopped = %v, want Unavailable", err)
	}
	if !strings.Contains(root.Output(), "CA certificate from the upstream: upstream stepcas") {
		t.Fatal("the root did not log the upstream as the cause")
	}
	renewals(t, w, 2, 30*time.Second)
	s.Restart(t)
	waitUntil(t, "root rotate to work again after step-ca's restart", 60*time.Second, func() bool {
		return root.admin(t, nil, "root", "rotate", "--force") == nil
	})
	if n := len(root.roots(t)); n != 3 {
		t.Errorf("%d roots after two successful rotations, want 3", n)
	}
}

// wantAnchoredOnStepCA checks what w's agent gives it to anchor on: step-ca's
// root alone, over the Workload API and as SDS ROOTCA (once the agent holds
// the trust bundle; before, its CA bundle file's meshca CA), and that w's
// chain verifies against that served root with crypto/x509 and openssl.
func wantAnchoredOnStepCA(t *testing.T, s *steptest.Server, w *workload) {
	t.Helper()
	td := w.ID.TrustDomain()
	waitUntil(t, "the Workload API bundle to be step-ca's root", 30*time.Second, func() bool {
		b, err := w.Source.GetX509BundleForTrustDomain(td)
		return err == nil && len(b.X509Authorities()) == 1 && b.HasX509Authority(s.Root)
	})
	envoy, err := sdstest.Dial(w.SDSSocket, &corev3.Node{Id: "sidecar~127.0.0.1~frontend.shop~shop.svc.cluster.local", Cluster: "frontend"})
	if err != nil {
		t.Fatal(err)
	}
	defer envoy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), harness.StartTimeout)
	defer cancel()
	sub, err := envoy.Subscribe(ctx, "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rootCA, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rootCA.Roots) != 1 || !rootCA.Roots[0].Equal(s.Root) {
		t.Fatalf("SDS ROOTCA holds %d certificates, want step-ca's root alone", len(rootCA.Roots))
	}
	svid, err := w.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	certs := svid.Certificates
	anchors, inters := x509.NewCertPool(), x509.NewCertPool()
	anchors.AddCert(rootCA.Roots[0])
	for _, c := range certs[1:] {
		inters.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the SVID does not verify against the served ROOTCA: %v", err)
	}
	if out, err := testkit.OpenSSLVerify(t, rootCA.Roots, certs[1:], certs[0], time.Time{}); err != nil {
		t.Fatalf("openssl verify -CAfile served-rootca.pem -untrusted chain.pem leaf.pem: %v\n%s", err, out)
	}
}

// caOf is the fingerprint of meshca's CA in w's chain: the certificate
// above its cluster intermediate.
func caOf(t *testing.T, w *workload) string {
	t.Helper()
	svid, err := w.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if len(svid.Certificates) < 3 {
		return ""
	}
	return fingerprint(svid.Certificates[2])
}

// wantUnderStepCA checks w's chain: leaf, cluster intermediate, meshca's
// CA ca, step-ca's intermediate; openssl verifies it against step-ca's
// root alone, and not without the chain.
func wantUnderStepCA(t *testing.T, s *steptest.Server, w *workload, ca string) {
	t.Helper()
	svid, err := w.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	certs := svid.Certificates
	if len(certs) != 4 || fingerprint(certs[2]) != ca {
		t.Fatalf("chain of %d certificates, CA %s; want leaf, intermediate, meshca's CA %s, step-ca's intermediate", len(certs),
			caOf(t, w), ca)
	}
	anchor := []*x509.Certificate{s.Root}
	if out, err := testkit.OpenSSLVerify(t, anchor, certs[1:], certs[0], time.Time{}); err != nil {
		t.Fatalf("openssl verify -CAfile upstream-root.pem -untrusted chain.pem leaf.pem: %v\n%s", err, out)
	}
	if out, err := testkit.OpenSSLVerify(t, anchor, nil, certs[0], time.Time{}); err == nil {
		t.Fatalf("openssl verified the leaf without its chain:\n%s", out)
	}
}
