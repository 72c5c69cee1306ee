package vault

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// signPolicy lets a token create, read and sign with one Transit key.
func signPolicy(key string) string {
	return fmt.Sprintf(`
path "transit/keys/%[1]s" { capabilities = ["read", "create", "update"] }
path "transit/sign/%[1]s" { capabilities = ["update"] }
`, key)
}

// appRole enables AppRole at mount approle-NAME, creates policy NAME and
// a role whose tokens carry it (with the given role settings), and returns
// an AuthConfig with its role ID and a secret-ID file.
func appRole(t *testing.T, v *devVault, name, policy string, role map[string]any) AuthConfig {
	t.Helper()
	ctx := context.Background()
	mount := "approle-" + name
	if err := v.Admin.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enable approle: %v", err)
	}
	if err := v.Admin.Sys().PutPolicyWithContext(ctx, name, policy); err != nil {
		t.Fatalf("policy: %v", err)
	}
	params := map[string]any{"token_policies": []string{name}}
	for k, val := range role {
		params[k] = val
	}
	rolePath := "auth/" + mount + "/role/meshca"
	if _, err := v.Admin.Logical().WriteWithContext(ctx, rolePath, params); err != nil {
		t.Fatalf("role: %v", err)
	}
	rid, err := v.Admin.Logical().ReadWithContext(ctx, rolePath+"/role-id")
	if err != nil {
		t.Fatalf("role id: %v", err)
	}
	sid, err := v.Admin.Logical().WriteWithContext(ctx, rolePath+"/secret-id", nil)
	if err != nil {
		t.Fatalf("secret id: %v", err)
	}
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte(sid.Data["secret_id"].(string)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return AuthConfig{Method: AuthAppRole, AppRole: AppRoleConfig{
		RoleID: rid.Data["role_id"].(string), SecretIDFile: file, Mount: mount,
	}}
}

// childToken creates a token with the given policies and TTL (0: the
// default, one month in dev mode); a positive ttl is also its max TTL.
func childToken(t *testing.T, v *devVault, policies []string, ttl time.Duration) string {
	t.Helper()
	req := &api.TokenCreateRequest{Policies: policies}
	if ttl > 0 {
		req.TTL, req.ExplicitMaxTTL = ttl.String(), ttl.String()
	}
	secret, err := v.Admin.Auth().Token().CreateWithContext(context.Background(), req)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return secret.Auth.ClientToken
}

// tokenValid reports whether Vault still accepts tok.
func tokenValid(v *devVault, tok string) bool {
	_, err := v.Admin.Auth().Token().LookupWithContext(context.Background(), tok)
	return err == nil
}

func mustSign(t *testing.T, s *Signer) {
	t.Helper()
	if _, err := s.Sign(nil, digestOf(crypto.SHA256, "x"), crypto.SHA256); err != nil {
		t.Fatalf("Sign: %v", err)
	}
}

func TestAppRoleLogin(t *testing.T) {
	v := shared(t)
	name := keyName(t)
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: appRole(t, v, name, signPolicy(name), nil)})
	mustSign(t, s)
	tok := s.client.Token()
	if tok == "" || tok == "root" {
		t.Fatalf("signer uses token %q, not an AppRole token", tok)
	}
	self, err := v.Admin.Auth().Token().LookupWithContext(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(self.Data["policies"]), name) {
		t.Fatalf("token policies %v lack %q", self.Data["policies"], name)
	}
}

// With no calls at all, the background loop renews the token and logs in
// again when renewal can no longer extend it (AppRole tokens with a 2 s TTL
// and a 5 s max TTL).
func TestTokenRenewedThenReplaced(t *testing.T) {
	v := shared(t)
	name := keyName(t)
	auth := appRole(t, v, name, signPolicy(name), map[string]any{"token_ttl": "2s", "token_max_ttl": "5s"})
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: auth})
	first := s.client.Token()
	eventually(t, 10*time.Second, "first token renewed", func() error {
		self, err := v.Admin.Auth().Token().LookupWithContext(context.Background(), first)
		if err != nil {
			return err
		}
		if self.Data["last_renewal_time"] == nil {
			return errors.New("not renewed yet")
		}
		return nil
	})
	eventually(t, 20*time.Second, "token replaced by a new login", func() error {
		if s.client.Token() == first {
			return errors.New("still the first token")
		}
		return nil
	})
	mustSign(t, s)
}

// AppRole tokens that live 3 s: the signer logs in again before each
// expires and keeps signing throughout.
func TestSigningAcrossTokenExpiry(t *testing.T) {
	v := shared(t)
	name := keyName(t)
	auth := appRole(t, v, name, signPolicy(name), map[string]any{"token_ttl": "3s", "token_max_ttl": "3s"})
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: auth})
	first := s.client.Token()
	seen := map[string]bool{first: true}
	deadline := time.Now().Add(30 * time.Second)
	for tokenValid(v, first) || len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: first token valid=%v, %d tokens seen", tokenValid(v, first), len(seen))
		}
		mustSign(t, s)
		seen[s.client.Token()] = true
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	mustSign(t, s)
}

// A revoked token is noticed by the next call, which logs in again and
// succeeds: the same path handles a token that expired unnoticed.
func TestRevokedTokenRelogin(t *testing.T) {
	v := shared(t)
	name := keyName(t)
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: appRole(t, v, name, signPolicy(name), nil)})
	old := s.client.Token()
	if err := v.Admin.Auth().Token().RevokeTreeWithContext(context.Background(), old); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	mustSign(t, s)
	if s.client.Token() == old {
		t.Fatal("signer still holds the revoked token")
	}
}

// A token file is re-read when its token expires.
func TestTokenFileReread(t *testing.T) {
	v := shared(t)
	name := keyName(t)
	first := childToken(t, v, nil, 3*time.Second)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: AuthConfig{TokenFile: file}})
	mustSign(t, s)
	second := childToken(t, v, nil, 0)
	if err := os.WriteFile(file, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "first token expired", func() error {
		if tokenValid(v, first) {
			return errors.New("still valid")
		}
		return nil
	})
	mustSign(t, s)
	if got := s.client.Token(); got != second {
		t.Fatal("signer does not use the token now in the file")
	}
}

// An inline token cannot be replaced: once it expires, calls fail with
// ErrPermissionDenied rather than hang or retry forever.
func TestInlineTokenExpiry(t *testing.T) {
	v := shared(t)
	tok := childToken(t, v, nil, 3*time.Second)
	s := newSigner(t, tokenConfig(v, tok, keyName(t)))
	mustSign(t, s)
	eventually(t, 30*time.Second, "sign fails with ErrPermissionDenied", func() error {
		_, err := s.Sign(nil, digestOf(crypto.SHA256, "x"), crypto.SHA256)
		if !errors.Is(err, ErrPermissionDenied) {
			return fmt.Errorf("got %v", err)
		}
		return nil
	})
}

func TestPermissionDenied(t *testing.T) {
	v := shared(t)
	ctx := context.Background()
	name := keyName(t)
	if _, err := v.Admin.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	readOnly := name + "-read"
	if err := v.Admin.Sys().PutPolicyWithContext(ctx, readOnly,
		fmt.Sprintf(`path "transit/keys/%s" { capabilities = ["read"] }`, name)); err != nil {
		t.Fatal(err)
	}

	t.Run("sign without the sign capability", func(t *testing.T) {
		s := newSigner(t, tokenConfig(v, childToken(t, v, []string{readOnly}, 0), name))
		_, err := s.Sign(nil, digestOf(crypto.SHA256, "x"), crypto.SHA256)
		if !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("Sign: %v, want ErrPermissionDenied", err)
		}
		if !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("error %q does not say why", err)
		}
		t.Log(err)
	})
	t.Run("unknown token", func(t *testing.T) {
		_, err := New(ctx, tokenConfig(v, "hvs.not-a-token", name))
		if !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("New: %v, want ErrPermissionDenied", err)
		}
	})
	t.Run("approle with a wrong secret id", func(t *testing.T) {
		auth := appRole(t, v, name, signPolicy(name), nil)
		if err := os.WriteFile(auth.AppRole.SecretIDFile, []byte("wrong"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(ctx, Config{Address: v.Addr, KeyName: name, Auth: auth})
		if err == nil || !strings.Contains(err.Error(), "login (approle)") {
			t.Fatalf("New: %v, want a failed approle login", err)
		}
	})
}
