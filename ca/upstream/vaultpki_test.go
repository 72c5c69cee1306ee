package upstream

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/vaultcas"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/vaulttest"
)

// TestVaultPKIRoleCannotIssueMeshCA is why Config.Validate refuses
// vaultcas: against a real Vault PKI secrets engine whose role allows any
// name and long lifetimes, smallstep's vaultcas (pki/sign/ROLE) returns an
// end-entity certificate for meshca's CA request, and Issue refuses it. If
// a future Vault or vaultcas issued a CA certificate here, this test fails
// and the refusal should be lifted.
func TestVaultPKIRoleCannotIssueMeshCA(t *testing.T) {
	v := vaulttest.Start(t)
	ctx := t.Context()
	mount := vaulttest.KeyName(t)
	if err := v.Admin.Sys().MountWithContext(ctx, mount, &api.MountInput{
		Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "87600h"},
	}); err != nil {
		t.Fatalf("mount pki: %v", err)
	}
	root, err := v.Admin.Logical().WriteWithContext(ctx, mount+"/root/generate/internal",
		map[string]any{"common_name": "vault upstream root", "ttl": "87600h"})
	if err != nil {
		t.Fatalf("generate root: %v", err)
	}
	block, _ := pem.Decode([]byte(root.Data["certificate"].(string)))
	if block == nil {
		t.Fatal("no root certificate in Vault's answer")
	}
	sum := sha256.Sum256(block.Bytes)
	if _, err := v.Admin.Logical().WriteWithContext(ctx, mount+"/roles/meshca", map[string]any{
		"allow_any_name": true, "enforce_hostnames": false, "key_type": "any", "max_ttl": "2400h",
		"use_csr_common_name": true, "basic_constraints_valid_for_non_ca": true,
	}); err != nil {
		t.Fatalf("role: %v", err)
	}
	policy := fmt.Sprintf(`
path "%[1]s/sign/meshca" { capabilities = ["update"] }
path "%[1]s/cert/ca_chain" { capabilities = ["read"] }
`, mount)
	role := v.AppRole(t, mount, policy, nil)
	auth, err := json.Marshal(map[string]string{"roleID": role.RoleID, "secretIDFile": role.SecretIDFile})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := json.Marshal(map[string]any{"pkiMountPath": mount, "pkiRoleDefault": "meshca",
		"authType": "approle", "authMountPath": role.Mount, "authOptions": json.RawMessage(auth)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := vaultcas.New(ctx, apiv1.Options{Type: apiv1.VaultCAS, CertificateAuthority: v.Addr,
		CertificateAuthorityFingerprint: hex.EncodeToString(sum[:]), Config: conf})
	if err != nil {
		t.Fatalf("vaultcas: %v", err)
	}
	_, err = newAuthority(svc, TypeVaultCAS, 0).Issue(ctx, Request{Signer: testkit.Key(t, "meshca-ca-1")})
	if !errors.Is(err, ErrBadCertificate) || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Fatalf("Issue through vaultcas = %v, want a refused end-entity certificate", err)
	}
	if err := (Config{Type: TypeVaultCAS}).Validate(); err == nil {
		t.Fatal("Validate accepts vaultcas")
	}
}
