package upstream_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/vaulttest"
)

// vaultPKI is a PKI mount with its own root on a real Vault, and an
// AppRole whose policy allows what the vaultpki adapter calls.
type vaultPKI struct {
	v     *vaulttest.Server
	mount string
	root  *x509.Certificate
	cfg   upstream.Config
}

// PKIPolicy is what meshca's AppRole needs on mount: sign-intermediate
// and the issuer's chain.
func pkiPolicy(mount string) string {
	return fmt.Sprintf(`
path "%[1]s/issuer/default/sign-intermediate" { capabilities = ["update"] }
path "%[1]s/issuer/default/json" { capabilities = ["read"] }
`, mount)
}

func startVaultPKI(t *testing.T, policy func(mount string) string) *vaultPKI {
	t.Helper()
	v := vaulttest.Start(t)
	ctx := t.Context()
	p := &vaultPKI{v: v, mount: vaulttest.KeyName(t)}
	if err := v.Admin.Sys().MountWithContext(ctx, p.mount, &api.MountInput{
		Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "87600h"},
	}); err != nil {
		t.Fatalf("mount pki: %v", err)
	}
	root, err := v.Admin.Logical().WriteWithContext(ctx, p.mount+"/root/generate/internal",
		map[string]any{"common_name": "vault upstream root", "ttl": "87600h", "key_type": "ec", "key_bits": 256})
	if err != nil {
		t.Fatalf("generate root: %v", err)
	}
	block, _ := pem.Decode([]byte(root.Data["certificate"].(string)))
	if block == nil {
		t.Fatal("no root certificate in Vault's answer")
	}
	if p.root, err = x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(block.Bytes)
	role := v.AppRole(t, p.mount, policy(p.mount), nil)
	p.cfg = upstream.Config{Type: upstream.TypeVaultPKI, TTL: 72 * time.Hour, VaultPKI: upstream.VaultPKI{
		Address: v.Addr, CACertFile: v.CAFile, Mount: p.mount, Fingerprint: hex.EncodeToString(sum[:]),
		Auth: vault.AuthConfig{Method: vault.AuthAppRole, AppRole: vault.AppRoleConfig{
			RoleID: role.RoleID, SecretIDFile: role.SecretIDFile, Mount: role.Mount}},
	}}
	return p
}

func (p *vaultPKI) authority(t *testing.T, cfg upstream.Config) *upstream.Authority {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := upstream.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("upstream.New: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// TestVaultPKIIssuesMeshCA enrols meshca's CA with a real Vault PKI mount
// (sign-intermediate), issues a workload certificate two levels below it
// and verifies it with openssl against Vault's root alone; a second CA
// (rotation) chains to the same anchor.
func TestVaultPKIIssuesMeshCA(t *testing.T) {
	p := startVaultPKI(t, pkiPolicy)
	a := p.authority(t, p.cfg)
	issued, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if !issued.Root.Equal(p.root) || len(issued.Chain) != 0 {
		t.Fatalf("anchor %q with %d upstream intermediates; want Vault's root directly", issued.Root.Subject, len(issued.Chain))
	}
	if life := issued.Certificate.NotAfter.Sub(issued.Certificate.NotBefore); life < 71*time.Hour || life > 73*time.Hour {
		t.Fatalf("lifetime %v, want the 72h asked for", life)
	}
	leaf, chain := issueLeaf(t, issued, "meshca-ca-1")
	verifyUnder(t, issued.Root, leaf, chain)

	next, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-2")})
	if err != nil {
		t.Fatalf("second Issue: %v", err)
	}
	if next.Certificate.Equal(issued.Certificate) || !next.Root.Equal(p.root) {
		t.Fatal("the second CA is not a new certificate under the same anchor")
	}
}

// TestVaultPKIRefusals: a policy without sign-intermediate is a refusal
// (the operator must fix it), a wrong root fingerprint is refused, and a
// stopped Vault is unavailable, not a refusal.
func TestVaultPKIRefusals(t *testing.T) {
	p := startVaultPKI(t, func(mount string) string {
		return fmt.Sprintf(`path "%s/issuer/default/json" { capabilities = ["read"] }`, mount)
	})
	a := p.authority(t, p.cfg)
	if _, err := a.Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")}); !errors.Is(err, upstream.ErrRefused) {
		t.Fatalf("Issue without sign-intermediate = %v, want ErrRefused", err)
	}

	q := startVaultPKI(t, pkiPolicy)
	wrong := q.cfg
	wrong.VaultPKI.Fingerprint = strings.Repeat("ab", 32)
	if _, err := p.authority(t, wrong).Issue(t.Context(), upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")}); err == nil ||
		!strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("Issue with a wrong root fingerprint = %v", err)
	}

	b := p.authority(t, q.cfg)
	q.v.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := b.Issue(ctx, upstream.Request{Signer: testkit.Key(t, "meshca-ca-1")})
	if err == nil || errors.Is(err, upstream.ErrRefused) {
		t.Fatalf("Issue with Vault stopped = %v, want unavailable", err)
	}
}
