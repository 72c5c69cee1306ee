package upstream_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/testkit"
)

// TestCloudCASAdapterBuilds maps a cloudcas Config onto smallstep's
// adapter: a service account file is read and the client built, without
// reaching Google. Issuing is not exercised: cloudcas builds its Google
// client in an unexported function with no endpoint option, so nothing
// can stand in for Cloud CAS from outside the library.
func TestCloudCASAdapterBuilds(t *testing.T) {
	ca := "projects/meshca-test/locations/europe-west1/caPools/pool/certificateAuthorities/ca"
	key := testkit.KeyOf(t, "rsa2048").(*rsa.PrivateKey)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	account, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "meshca-test", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "meshca@meshca-test.iam.gserviceaccount.com", "client_id": "1",
		"token_uri": "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(file, account, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := upstream.Config{Type: upstream.TypeCloudCAS, CloudCAS: upstream.CloudCAS{CertificateAuthority: ca, CredentialsFile: file}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := upstream.New(t.Context(), cfg); err != nil {
		t.Fatalf("New with a service account file: %v", err)
	}
	cfg.CloudCAS.CredentialsFile = filepath.Join(t.TempDir(), "missing.json")
	if _, err := upstream.New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("New with a missing credentials file = %v, want an error naming it", err)
	}
}
