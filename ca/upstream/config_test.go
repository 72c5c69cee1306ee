package upstream

import (
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/testkit"
)

const fp = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF"

func stepJWK() StepCAS {
	return StepCAS{URL: "https://ca.example:9000", Fingerprint: fp, Provisioner: "meshca", ProvisionerType: ProvisionerJWK, KeyFile: "/k"}
}

func testVaultPKI() VaultPKI {
	return VaultPKI{Address: "https://vault:8200", Mount: "pki-meshca", Auth: vault.AuthConfig{TokenFile: "/t"}}
}

const cloudCA = "projects/p/locations/europe-west1/caPools/pool/certificateAuthorities/ca"

func TestValidate(t *testing.T) {
	x5c := StepCAS{URL: "https://ca.example", Fingerprint: fp, Provisioner: "x", ProvisionerType: ProvisionerX5C, KeyFile: "/k", CertFile: "/c"}
	with := func(f func(*StepCAS)) StepCAS { s := stepJWK(); f(&s); return s }
	cases := []struct {
		name string
		cfg  Config
		err  string // empty: valid
	}{
		{"none", Config{}, ""},
		{"stepcas jwk", Config{Type: TypeStepCAS, StepCAS: stepJWK()}, ""},
		{"stepcas jwk from step-ca", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.KeyFile, s.PasswordFile = "", "/p" })}, ""},
		{"stepcas x5c", Config{Type: TypeStepCAS, StepCAS: x5c, TTL: MinTTL}, ""},
		{"cloudcas", Config{Type: TypeCloudCAS, CloudCAS: CloudCAS{CertificateAuthority: cloudCA}}, ""},
		{"options without type", Config{StepCAS: stepJWK()}, "without a type"},
		{"ttl without type", Config{TTL: 48 * time.Hour}, "without a type"},
		{"unknown type", Config{Type: "acmecas"}, `unknown type "acmecas"`},
		{"vaultcas refused", Config{Type: TypeVaultCAS}, "never makes a CA certificate"},
		{"short ttl", Config{Type: TypeStepCAS, StepCAS: stepJWK(), TTL: time.Hour}, "at least 24h"},
		{"negative ttl", Config{Type: TypeStepCAS, StepCAS: stepJWK(), TTL: -time.Hour}, "ttl"},
		{"cloud options on stepcas", Config{Type: TypeStepCAS, StepCAS: stepJWK(), CloudCAS: CloudCAS{CredentialsFile: "/c"}}, "cloudcas options"},
		{"step options on cloudcas", Config{Type: TypeCloudCAS, StepCAS: stepJWK(), CloudCAS: CloudCAS{CertificateAuthority: cloudCA}}, "stepcas options"},
		{"no url", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.URL = "" })}, "url is required"},
		{"http url", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.URL = "http://ca.example" })}, "want https"},
		{"url with user", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.URL = "https://u:p@ca.example" })}, "want https"},
		{"short fingerprint", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.Fingerprint = "abcd" })}, "64 digits"},
		{"no provisioner", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.Provisioner = "" })}, "provisioner is required"},
		{"no provisioner type", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.ProvisionerType = "" })}, "provisionerType is required"},
		{"bad provisioner type", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.ProvisionerType = "oidc" })}, `unknown provisionerType "oidc"`},
		{"jwk without key or password", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.KeyFile = "" })}, "needs keyFile, or passwordFile"},
		{"jwk with cert", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { s.CertFile = "/c" })}, "x5c provisioners only"},
		{"x5c without cert", Config{Type: TypeStepCAS, StepCAS: with(func(s *StepCAS) { *s = x5c; s.CertFile = "" })}, "needs certFile and keyFile"},
		{"vaultpki token", Config{Type: TypeVaultPKI, VaultPKI: testVaultPKI()}, ""},
		{"vaultpki approle", Config{Type: TypeVaultPKI, VaultPKI: VaultPKI{Address: "https://vault:8200", Auth: vault.AuthConfig{
			Method: vault.AuthAppRole, AppRole: vault.AppRoleConfig{RoleID: "r", SecretIDFile: "/s"}}}}, ""},
		{"vaultpki without address", Config{Type: TypeVaultPKI, VaultPKI: VaultPKI{Auth: testVaultPKI().Auth}}, "address is required"},
		{"vaultpki without login", Config{Type: TypeVaultPKI, VaultPKI: VaultPKI{Address: "https://vault:8200"}}, "token"},
		{"vaultpki bad fingerprint", Config{Type: TypeVaultPKI, VaultPKI: func() VaultPKI { v := testVaultPKI(); v.Fingerprint = "ab"; return v }()}, "64 digits"},
		{"vaultpki issuer path", Config{Type: TypeVaultPKI, VaultPKI: func() VaultPKI { v := testVaultPKI(); v.Issuer = "a/b"; return v }()}, "path segment"},
		{"vault options on stepcas", Config{Type: TypeStepCAS, StepCAS: stepJWK(), VaultPKI: testVaultPKI()}, "vaultpki options"},
		{"cloudcas bad name", Config{Type: TypeCloudCAS, CloudCAS: CloudCAS{CertificateAuthority: "projects/p/ca"}}, "certificateAuthority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.err)
			}
			if got := tc.cfg.Enabled(); got != (tc.cfg.Type != "") {
				t.Errorf("Enabled() = %v for type %q", got, tc.cfg.Type)
			}
		})
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t,
		&Config{Type: TypeStepCAS, StepCAS: stepJWK()},
		&Config{Type: TypeCloudCAS, CloudCAS: CloudCAS{CertificateAuthority: cloudCA}},
		&Config{Type: TypeVaultPKI, VaultPKI: testVaultPKI()},
		&Config{Type: "bad", TTL: time.Hour},
	)
}
