package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// timeKey reports whether a JSON key names an instant.
func timeKey(k string) bool {
	return k == "time" || strings.HasSuffix(k, "_at") || strings.HasSuffix(k, "_before") || strings.HasSuffix(k, "_after")
}

// checkTimes fails for every instant in v that is not an RFC 3339 string,
// and for any key that still carries Unix seconds; it returns how many
// instants it checked.
func checkTimes(t *testing.T, what string, v any) int {
	t.Helper()
	n := 0
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if strings.HasSuffix(k, "_unix") {
				t.Errorf("%s: %s is Unix seconds, want an RFC 3339 timestamp", what, k)
			}
			if s, ok := x.(string); ok && timeKey(k) {
				if _, err := time.Parse(time.RFC3339, s); err != nil {
					t.Errorf("%s: %s = %q is not RFC 3339", what, k, s)
				}
				n++
				continue
			}
			n += checkTimes(t, what, x)
		}
	case []any:
		for _, x := range v {
			n += checkTimes(t, what, x)
		}
	}
	return n
}

// Every `-o json` output of the admin commands writes instants as RFC 3339
// strings: cluster add, root list and rotate, revocations, audit list and
// status, on a running root.
func TestAdminJSONTimestampsRFC3339(t *testing.T) {
	cfg := runRootStack(t)
	sock := cfg.AdminSocketPath()
	total := 0
	for _, args := range [][]string{
		{"cluster", "add", "east", "--trust-domain", "east.example"},
		{"revoke", "--cluster", "east", "--reason", "test"},
		{"root", "rotate"},
		{"root", "list"},
		{"revocations"},
		{"audit", "list"},
	} {
		out, err := runCommand(t, append([]string{"admin", "--socket", sock, "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("admin %v: %v", args, err)
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("admin %v: %v\n%s", args, err, out)
		}
		total += checkTimes(t, strings.Join(args, " "), v)
	}
	out, err := runCommand(t, "status", "--socket", sock, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	total += checkTimes(t, "status", v)
	if total < 10 {
		t.Fatalf("only %d timestamps seen in the outputs; want expires_at, roots' not_before/not_after/added_at/activate_at, revoked_at, event times", total)
	}
}

// The admin command's help says it reaches issuers as well as the root.
func TestAdminHelpNamesIssuers(t *testing.T) {
	cmd := newAdminCommand()
	if !strings.Contains(cmd.Short, "issuer") {
		t.Errorf("admin: short help %q names only the root", cmd.Short)
	}
	if u := cmd.PersistentFlags().Lookup("socket").Usage; !strings.Contains(u, "issuer") {
		t.Errorf("admin --socket: %q names only the root", u)
	}
	for _, sub := range [][]string{{"audit"}, {"credential", "issue"}} {
		c, _, err := cmd.Find(sub)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(c.Short+c.Long, "issuer") && !strings.Contains(c.Short, "a root") {
			t.Errorf("admin %s: help %q names only the root", sub, c.Short)
		}
	}
}
