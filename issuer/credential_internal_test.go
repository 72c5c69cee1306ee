package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/keyutil"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
)

// TestCredentialFilesSurviveCrashes interrupts a credential renewal at each
// point and checks that load returns a credential whose key matches.
func TestCredentialFilesSurviveCrashes(t *testing.T) {
	tree := testkit.New(t, testkit.Options{TrustDomain: "east.example"})
	td := spiffeid.RequireTrustDomainFromString("east.example")
	newCred := func() *credential {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := credentialID(td, "east", "")
		leaf, err := tree.Root.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), URIs: []*url.URL{id.URL()}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return &credential{key: key, chain: []*x509.Certificate{leaf}, trustDomain: td, cluster: "east"}
	}
	f := credentialFiles{dir: t.TempDir()}
	mustLoad := func(want *credential) {
		t.Helper()
		got, err := f.load()
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || !got.leaf().Equal(want.leaf()) || !keyutil.Equal(got.key.Public(), want.key.Public()) ||
			got.cluster != "east" || got.trustDomain != td {
			t.Fatalf("load returned another credential")
		}
	}
	if cred, err := f.load(); cred != nil || err != nil {
		t.Fatalf("empty directory: %v %v", cred, err)
	}

	first := newCred()
	if err := f.writePendingKey(first.key); err != nil {
		t.Fatal(err)
	}
	if err := f.commit(first); err != nil {
		t.Fatal(err)
	}
	mustLoad(first)

	// Crash after the new key was written, before the certificate.
	second := newCred()
	if err := f.writePendingKey(second.key); err != nil {
		t.Fatal(err)
	}
	mustLoad(first)

	// Crash after the certificate was written, before the key was renamed.
	if err := os.WriteFile(f.certPath(), ca.EncodeCertificates(second.chain...), 0o644); err != nil {
		t.Fatal(err)
	}
	mustLoad(second)
	if _, err := os.Stat(f.path(pendingKeyFile)); !os.IsNotExist(err) {
		t.Errorf("pending key not promoted: %v", err)
	}
	mustLoad(second)

	// A certificate without its key is an error, not a silent re-enrolment.
	third := newCred()
	if err := os.WriteFile(f.certPath(), ca.EncodeCertificates(third.chain...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.load(); err == nil {
		t.Error("loaded a credential without its key")
	}
}
