package stack

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/test/steptest"
)

// TestRenewalUnderStepCA renews a standalone issuer's CA certificate under
// a real step-ca, through an outage: with step-ca stopped when the
// certificate falls due, the renewal fails and is retried while the
// current CA keeps minting intermediates whose chains pass `openssl
// verify` against step-ca's root; once step-ca is back the renewal
// succeeds with a new certificate for the same key, which the next start
// finds in DATA_DIR.
func TestRenewalUnderStepCA(t *testing.T) {
	const ttl = 7 * 24 * time.Hour
	s := steptest.Start(t, steptest.Options{})
	up, err := upstream.New(t.Context(), upstream.Config{Type: upstream.TypeStepCAS, TTL: ttl, StepCAS: upstream.StepCAS{
		URL: s.URL, Fingerprint: s.Fingerprint, Provisioner: steptest.Provisioner, ProvisionerType: upstream.ProvisionerJWK, KeyFile: s.KeyFile,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	dir := t.TempDir()
	key, err := ca.LoadOrCreateKeyFile(filepath.Join(dir, ca.RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	r := pkiRenewer{up: up, signer: key, file: filepath.Join(dir, UpstreamCAFile), log: log}
	first, err := r.RenewCA(t.Context(), time.Now())
	if err != nil {
		t.Fatalf("enrol under step-ca: %v", err)
	}
	clock := testkit.NewClock(time.Now())
	local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{
		Root: first.CA, Anchor: first.Anchor, Renewer: r, TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Cluster: "dev", RenewBackoff: 20 * time.Millisecond, Now: clock.Now, Logger: log, Renewed: r.keep,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, changed := local.Current()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- local.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s.Stop(t)
	due := first.CA.Certificate.NotAfter.Sub(first.CA.Certificate.NotBefore) * 2 / 3
	clock.Advance(due + time.Minute)
	testkit.Eventually(t, 30*time.Second, "a failed renewal logged", func() error {
		if !strings.Contains(logs.String(), "renewing meshca's CA certificate from the upstream PKI failed") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	during, _, err := local.NewIntermediate(t.Context())
	if err != nil {
		t.Fatalf("minting an intermediate while step-ca is down: %v", err)
	}
	if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{s.Root}, during.Chain, during.Certificate, time.Time{}); err != nil {
		t.Errorf("intermediate minted during the outage: openssl verify: %v\n%s", err, out)
	}

	s.Restart(t)
	clock.Advance(2 * time.Hour) // past the longest backoff
	select {
	case <-changed:
	case <-time.After(60 * time.Second):
		t.Fatalf("no renewal after step-ca came back; logs:\n%s", logs.String())
	}
	clock.Advance(-due - time.Minute - 2*time.Hour) // not due again
	time.Sleep(time.Second)                         // a renewal under way ends
	renewed := local.CA()
	if renewed.Certificate.Equal(first.CA.Certificate) || !bytes.Equal(renewed.Certificate.RawSubjectPublicKeyInfo, first.CA.Certificate.RawSubjectPublicKeyInfo) {
		t.Fatal("the renewed CA is not a new certificate for the same key")
	}
	after, _, err := local.NewIntermediate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]*ca.Authority{"during the outage": during, "after the renewal": after} {
		if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{s.Root}, a.Chain, a.Certificate, time.Time{}); err != nil {
			t.Errorf("intermediate minted %s: openssl verify: %v\n%s", name, err, out)
		}
	}
	if b, _ := local.Current(); !b.OwnAuthorities().Roots()[0].Equal(renewed.Certificate) {
		t.Error("the bundle's authority is not the renewed certificate")
	}
	// What the next start uses: the certificate the LocalRoot serves now
	// (a renewal retried while the test clock still said due may have
	// replaced the renewed one with a newer twin), nothing it refused.
	kept := r.cachedCA(renewed.Certificate.NotBefore.Add(time.Minute))
	if kept == nil || !kept.CA.Certificate.Equal(local.CA().Certificate) || !kept.Anchor.Equal(s.Root) {
		t.Errorf("DATA_DIR does not keep the certificate in use for the next start; logs:\n%s", logs.String())
	}
}
