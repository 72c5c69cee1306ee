package multicluster

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/vaulttest"
)

// TestRootRotateWhileInProgress runs `meshca admin root rotate` twice: the
// second is refused while the first root is prepared, and --force rotates
// anyway.
func TestRootRotateWhileInProgress(t *testing.T) {
	root := startRoot(t, "")
	if err := root.admin(t, nil, "root", "rotate", "--propagation-delay", "1h"); err != nil {
		t.Fatal(err)
	}
	err := root.admin(t, nil, "root", "rotate", "--propagation-delay", "1h")
	if err == nil || !strings.Contains(err.Error(), "rotation is in progress") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second root rotate = %v, want it refused: a rotation is in progress, --force to override", err)
	}
	if n := len(root.roots(t)); n != 2 {
		t.Fatalf("%d roots in the bundle after a refused rotation, want 2", n)
	}
	if err := root.admin(t, nil, "root", "rotate", "--propagation-delay", "1h", "--force"); err != nil {
		t.Fatalf("root rotate --force: %v", err)
	}
	if n := len(root.roots(t)); n != 3 {
		t.Fatalf("%d roots in the bundle after a forced rotation, want 3", n)
	}
}

// TestAdminAuditVerifyReportsHead checks that `meshca admin audit verify`
// reports the number of events and the chain head, in JSON and as a table,
// the same as `meshca audit verify` reading the database.
func TestAdminAuditVerifyReportsHead(t *testing.T) {
	root := startRoot(t, "")
	root.joinToken(t, "east", "east.example")
	root.joinToken(t, "west", "west.example")
	var resp struct {
		OK       bool   `json:"ok"`
		Events   int64  `json:"events,string"`
		HeadSeq  int64  `json:"head_seq,string"`
		HeadHash string `json:"head_hash"`
	}
	if err := root.admin(t, &resp, "audit", "verify"); err != nil {
		t.Fatal(err)
	}
	// The first root and two clusters: at least three events.
	if !resp.OK || resp.Events < 3 || resp.HeadSeq != resp.Events || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(resp.HeadHash) {
		t.Fatalf("admin audit verify -o json = %+v, want ok, the event count, head seq and head hash", resp)
	}
	want := fmt.Sprintf("audit chain verified: %d events, head seq %d hash %s", resp.Events, resp.HeadSeq, resp.HeadHash)
	table := mustRun(t, "admin", "--socket", root.Socket, "audit", "verify")
	if !strings.Contains(table, want) {
		t.Errorf("admin audit verify printed %q, want %q", table, want)
	}
	offline := mustRun(t, "audit", "verify", "--data-dir", root.Dir)
	if !strings.Contains(offline, want) {
		t.Errorf("audit verify (offline) printed %q, want %q", offline, want)
	}
}

// TestVaultRootDefaultKeyPrefix starts a Vault-backed root without
// key.vault.keyPrefix: its keys are named meshca-root-<time>-<random>.
func TestVaultRootDefaultKeyPrefix(t *testing.T) {
	v := vaulttest.Shared(t)
	tokenFile := harness.WriteFile(t, filepath.Join(t.TempDir(), "vault-token"), v.Token)
	root := startRoot(t, fmt.Sprintf("key:\n  kind: vault\n  vault:\n    address: %s\n    auth:\n      method: token\n      tokenFile: %s\n",
		v.Addr, tokenFile))
	if err := root.admin(t, nil, "root", "rotate", "--propagation-delay", "1h"); err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Roots []struct {
			Key string `json:"key"`
		} `json:"roots"`
	}
	if err := root.admin(t, &resp, "root", "list"); err != nil {
		t.Fatal(err)
	}
	if len(resp.Roots) != 2 {
		t.Fatalf("roots %+v, want two", resp.Roots)
	}
	for _, r := range resp.Roots {
		name, ok := strings.CutPrefix(r.Key, "vault:meshca-root-")
		if !ok {
			t.Fatalf("root key %q, want vault:meshca-root-<suffix>", r.Key)
		}
		sec, err := v.Admin.Logical().Read("transit/keys/meshca-root-" + name)
		if err != nil || sec == nil {
			t.Fatalf("Transit key meshca-root-%s: %v, %v", name, sec, err)
		}
	}
}
