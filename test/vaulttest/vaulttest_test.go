package vaulttest

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// A file-storage server keeps its Transit keys across a crash (Kill) and a
// restart, comes back sealed, and works again once unsealed; Seal and
// Unseal work on it too.
func TestFileServerKillRestart(t *testing.T) {
	v := StartFile(t)
	ctx := context.Background()
	key := KeyName(t)
	if _, err := v.Admin.Logical().WriteWithContext(ctx, "transit/keys/"+key, map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatalf("create key: %v", err)
	}
	if err := v.Restart(); err == nil {
		t.Fatal("Restart of a running server succeeded")
	}

	v.Kill()
	if code := v.healthCode(); code != 0 {
		t.Fatalf("health %d after Kill, want no answer", code)
	}
	if err := v.Restart(); err != nil {
		t.Fatal(err)
	}
	if code := v.healthCode(); code != http.StatusServiceUnavailable {
		t.Fatalf("health %d after Restart, want %d (sealed)", code, http.StatusServiceUnavailable)
	}
	if err := v.Unseal(); err != nil {
		t.Fatal(err)
	}
	if s, err := v.Admin.Logical().ReadWithContext(ctx, "transit/keys/"+key); err != nil || s == nil {
		t.Fatalf("key after restart: %v, %v", s, err)
	}

	if err := v.Seal(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Admin.Logical().ReadWithContext(ctx, "transit/keys/"+key); err == nil {
		t.Fatal("read from a sealed server succeeded")
	}
	if err := v.Unseal(); err != nil {
		t.Fatal(err)
	}
}

// A dev server has its auth helpers working and refuses Restart.
func TestDevServer(t *testing.T) {
	v := Start(t)
	if v.Token != DevRootToken || v.UnsealKey == "" {
		t.Fatalf("token %q, unseal key %q", v.Token, v.UnsealKey)
	}
	ctx := context.Background()

	tok := v.ChildToken(t, nil, 2*time.Second)
	if !v.TokenValid(tok) {
		t.Fatal("fresh child token not valid")
	}
	deadline := time.Now().Add(30 * time.Second)
	for v.TokenValid(tok) {
		if time.Now().After(deadline) {
			t.Fatal("child token with a 2s TTL still valid after 30s")
		}
		time.Sleep(pollInterval)
	}

	name := KeyName(t)
	r := v.AppRole(t, name, SignPolicy(name), map[string]any{"token_ttl": "1m"})
	c, err := v.Client("")
	if err != nil {
		t.Fatal(err)
	}
	login, err := c.Logical().WriteWithContext(ctx, "auth/"+r.Mount+"/login", map[string]any{"role_id": r.RoleID, "secret_id": r.SecretID})
	if err != nil {
		t.Fatalf("approle login: %v", err)
	}
	c.SetToken(login.Auth.ClientToken)
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatalf("create key with the approle token: %v", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/"+name+"-other", nil); err == nil {
		t.Fatal("approle token created a key its policy does not name")
	}

	v.Stop()
	if err := v.Restart(); err == nil {
		t.Fatal("Restart of a dev server succeeded")
	}
}
