package vaulttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

var nameUnsafe = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// nameSeq makes names unique within the process: with -count=N the shared
// server outlives each run of a test.
var nameSeq atomic.Int64

// KeyName turns the test's name into a fresh name, unique in the process,
// that is valid for a Transit key, an auth mount and a policy: lower case,
// runs of characters other than letters, digits and "_" replaced by "-",
// and a sequence number appended.
func KeyName(tb testing.TB) string {
	base := strings.ToLower(strings.Trim(nameUnsafe.ReplaceAllString(tb.Name(), "-"), "-"))
	return base + "-" + strconv.FormatInt(nameSeq.Add(1), 10)
}

// SignPolicy is a Vault policy that lets a token create, read and sign
// with the Transit key key (mount "transit"): what a signer that may
// create its key needs.
func SignPolicy(key string) string {
	return fmt.Sprintf(`
path "transit/keys/%[1]s" { capabilities = ["read", "create", "update"] }
path "transit/sign/%[1]s" { capabilities = ["update"] }
`, key)
}

// AppRole is an AppRole role made by Server.AppRole.
type AppRole struct {
	Mount        string // auth mount, "approle-NAME"
	Role         string // role name, "meshca"
	RoleID       string
	SecretID     string
	SecretIDFile string // holds SecretID and a newline; in a temporary directory of the test
}

// AppRole enables AppRole at mount approle-NAME, writes policy NAME and
// creates role "meshca" there, whose tokens carry that policy; role holds
// further role settings (e.g. "token_ttl": "2s"), nil for none. It returns
// the role's ID and a fresh secret ID, also written to a file.
func (v *Server) AppRole(tb testing.TB, name, policy string, role map[string]any) AppRole {
	tb.Helper()
	ctx := context.Background()
	r := AppRole{Mount: "approle-" + name, Role: "meshca"}
	if err := v.Admin.Sys().EnableAuthWithOptionsWithContext(ctx, r.Mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		tb.Fatalf("enable approle: %v", err)
	}
	if err := v.Admin.Sys().PutPolicyWithContext(ctx, name, policy); err != nil {
		tb.Fatalf("policy: %v", err)
	}
	params := map[string]any{"token_policies": []string{name}}
	for k, val := range role {
		params[k] = val
	}
	rolePath := "auth/" + r.Mount + "/role/" + r.Role
	if _, err := v.Admin.Logical().WriteWithContext(ctx, rolePath, params); err != nil {
		tb.Fatalf("role: %v", err)
	}
	rid, err := v.Admin.Logical().ReadWithContext(ctx, rolePath+"/role-id")
	if err != nil {
		tb.Fatalf("role id: %v", err)
	}
	sid, err := v.Admin.Logical().WriteWithContext(ctx, rolePath+"/secret-id", nil)
	if err != nil {
		tb.Fatalf("secret id: %v", err)
	}
	r.RoleID, r.SecretID = rid.Data["role_id"].(string), sid.Data["secret_id"].(string)
	r.SecretIDFile = filepath.Join(tb.TempDir(), "secret-id")
	if err := os.WriteFile(r.SecretIDFile, []byte(r.SecretID+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return r
}

// ChildToken creates a token of the root token with the given policies
// and TTL (0: the default, one month on a dev server); a positive ttl is
// also its explicit max TTL, so the token cannot be renewed beyond it.
func (v *Server) ChildToken(tb testing.TB, policies []string, ttl time.Duration) string {
	tb.Helper()
	req := &api.TokenCreateRequest{Policies: policies}
	if ttl > 0 {
		req.TTL, req.ExplicitMaxTTL = ttl.String(), ttl.String()
	}
	secret, err := v.Admin.Auth().Token().CreateWithContext(context.Background(), req)
	if err != nil {
		tb.Fatalf("create token: %v", err)
	}
	return secret.Auth.ClientToken
}

// TokenValid reports whether Vault still accepts tok (looked up with the
// root token).
func (v *Server) TokenValid(tok string) bool {
	_, err := v.Admin.Auth().Token().LookupWithContext(context.Background(), tok)
	return err == nil
}
