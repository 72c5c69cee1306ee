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

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/vaulttest"
)

// appRole sets up an AppRole role on v (see vaulttest.Server.AppRole) and
// returns the AuthConfig that logs in with it.
func appRole(t *testing.T, v *vaulttest.Server, name, policy string, role map[string]any) AuthConfig {
	t.Helper()
	r := v.AppRole(t, name, policy, role)
	return AuthConfig{Method: AuthAppRole, AppRole: AppRoleConfig{
		RoleID: r.RoleID, SecretIDFile: r.SecretIDFile, Mount: r.Mount,
	}}
}

func mustSign(t *testing.T, s *Signer) {
	t.Helper()
	if _, err := s.Sign(nil, digestOf(crypto.SHA256, "x"), crypto.SHA256); err != nil {
		t.Fatalf("Sign: %v", err)
	}
}

func TestAppRoleLogin(t *testing.T) {
	v := vaulttest.Shared(t)
	name := vaulttest.KeyName(t)
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: appRole(t, v, name, vaulttest.SignPolicy(name), nil)})
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
	v := vaulttest.Shared(t)
	name := vaulttest.KeyName(t)
	auth := appRole(t, v, name, vaulttest.SignPolicy(name), map[string]any{"token_ttl": "2s", "token_max_ttl": "5s"})
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: auth})
	first := s.client.Token()
	testkit.Eventually(t, 10*time.Second, "first token renewed", func() error {
		self, err := v.Admin.Auth().Token().LookupWithContext(context.Background(), first)
		if err != nil {
			return err
		}
		if self.Data["last_renewal_time"] == nil {
			return errors.New("not renewed yet")
		}
		return nil
	})
	testkit.Eventually(t, 20*time.Second, "token replaced by a new login", func() error {
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
	v := vaulttest.Shared(t)
	name := vaulttest.KeyName(t)
	auth := appRole(t, v, name, vaulttest.SignPolicy(name), map[string]any{"token_ttl": "3s", "token_max_ttl": "3s"})
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: auth})
	first := s.client.Token()
	seen := map[string]bool{first: true}
	deadline := time.Now().Add(30 * time.Second)
	for v.TokenValid(first) || len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: first token valid=%v, %d tokens seen", v.TokenValid(first), len(seen))
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
	v := vaulttest.Shared(t)
	name := vaulttest.KeyName(t)
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: appRole(t, v, name, vaulttest.SignPolicy(name), nil)})
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
	v := vaulttest.Shared(t)
	name := vaulttest.KeyName(t)
	first := v.ChildToken(t, nil, 3*time.Second)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSigner(t, Config{Address: v.Addr, KeyName: name, Auth: AuthConfig{TokenFile: file}})
	mustSign(t, s)
	second := v.ChildToken(t, nil, 0)
	if err := os.WriteFile(file, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "first token expired", func() error {
		if v.TokenValid(first) {
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
	v := vaulttest.Shared(t)
	tok := v.ChildToken(t, nil, 3*time.Second)
	s := newSigner(t, tokenConfig(v, tok, vaulttest.KeyName(t)))
	mustSign(t, s)
	testkit.Eventually(t, 30*time.Second, "sign fails with ErrPermissionDenied", func() error {
		_, err := s.Sign(nil, digestOf(crypto.SHA256, "x"), crypto.SHA256)
		if !errors.Is(err, ErrPermissionDenied) {
			return fmt.Errorf("got %v", err)
		}
		return nil
	})
}

func TestPermissionDenied(t *testing.T) {
	v := vaulttest.Shared(t)
	ctx := context.Background()
	name := vaulttest.KeyName(t)
	if _, err := v.Admin.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	readOnly := name + "-read"
	if err := v.Admin.Sys().PutPolicyWithContext(ctx, readOnly,
		fmt.Sprintf(`path "transit/keys/%s" { capabilities = ["read"] }`, name)); err != nil {
		t.Fatal(err)
	}

	t.Run("sign without the sign capability", func(t *testing.T) {
		s := newSigner(t, tokenConfig(v, v.ChildToken(t, []string{readOnly}, 0), name))
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
		auth := appRole(t, v, name, vaulttest.SignPolicy(name), nil)
		if err := os.WriteFile(auth.AppRole.SecretIDFile, []byte("wrong"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(ctx, Config{Address: v.Addr, KeyName: name, Auth: auth})
		if err == nil || !strings.Contains(err.Error(), "login (approle)") {
			t.Fatalf("New: %v, want a failed approle login", err)
		}
	})
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &Config{})
}
