package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/attest"
)

// logWait bounds the wait for the server to log a rejection it has already
// sent to the client.
const logWait = 5 * time.Second

// TestRejections checks that a refused cert fetch tells the caller only
// "Unauthenticated", keeps the reason in the server's log, and writes nothing.
func TestRejections(t *testing.T) {
	srv := startDev(t, devOptions{})
	// A dev signer the server does not trust (meshca dev token only uses
	// an existing one).
	otherDir := filepath.Join(t.TempDir(), "other")
	if _, err := attest.LoadOrCreateDevSigner(otherDir); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		// tokenArgs are added to `meshca dev token` (run in the server's dir).
		tokenArgs []string
		// wantLog must all appear in the server's log for this request.
		wantLog []string
	}{
		{
			name:      "wrong audience",
			tokenArgs: []string{"--audience", "wrong"},
			wantLog:   []string{"Unauthenticated", "audience"},
		},
		{
			name:      "token from another data dir",
			tokenArgs: []string{"--data-dir", otherDir},
			wantLog:   []string{"Unauthenticated"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, tokenFile := mintToken(t, srv.Dir, "token-"+strings.ReplaceAll(tt.name, " ", "-"), tt.tokenArgs...)
			out := filepath.Join(t.TempDir(), "certs")
			logBefore := len(srv.Stderr())

			r := fetchCert(t, srv, tokenFile, out)
			if r.code == 0 {
				t.Fatalf("cert fetch succeeded, want a refusal: %s", r)
			}
			checkOpaqueRefusal(t, r, token)
			if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
				t.Errorf("a refused fetch wrote %d files into %s: %v", len(entries), out, entries)
			} else if err != nil && !os.IsNotExist(err) {
				t.Error(err)
			}

			serverLog := waitForLog(t, srv, logBefore, tt.wantLog)
			if strings.Contains(srv.Stderr(), signature(token)) {
				t.Errorf("the server's log contains the token")
			}
			t.Logf("server logged: %s", strings.TrimSpace(serverLog))
		})
	}
}

// checkOpaqueRefusal asserts that a refused fetch printed one line naming
// Unauthenticated and nothing about why, and not the token.
func checkOpaqueRefusal(t testing.TB, r result, token string) {
	t.Helper()
	if r.stdout != "" {
		t.Errorf("a refused fetch printed to stdout: %q", r.stdout)
	}
	msg := strings.TrimSuffix(r.stderr, "\n")
	if msg == "" || strings.Contains(msg, "\n") {
		t.Fatalf("stderr = %q, want exactly one line", r.stderr)
	}
	_, detail, ok := strings.Cut(msg, "Unauthenticated")
	if !ok {
		t.Fatalf("stderr = %q, want it to say Unauthenticated", msg)
	}
	// What follows the code must be generic: the reason belongs in the
	// server's log only.
	var revealed []string
	for _, word := range []string{"audience", "wrong", "kid", "key", "signature", "expired", "issuer", "token", "jwt", "es256", "attest"} {
		if strings.Contains(strings.ToLower(detail), word) {
			revealed = append(revealed, word)
		}
	}
	if len(revealed) > 0 {
		t.Errorf("stderr %q reveals the reason: %q after Unauthenticated", msg, revealed)
	}
	if strings.Contains(msg, signature(token)) {
		t.Errorf("stderr %q contains the token", msg)
	}
}

// waitForLog waits up to logWait for every string in want to appear in what
// the server logged after offset, and returns that part of the log.
func waitForLog(t testing.TB, srv *devServer, offset int, want []string) string {
	t.Helper()
	deadline := time.Now().Add(logWait)
	for {
		logged := srv.Stderr()[offset:]
		missing := ""
		for _, w := range want {
			if !strings.Contains(logged, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return logged
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's log has no %q for this request within %v; it logged:\n%s", missing, logWait, logged)
		}
		time.Sleep(pollInterval)
	}
}

// signature is the JWT's last part: unique to the token and never
// legitimately printed.
func signature(token string) string {
	return token[strings.LastIndex(token, ".")+1:]
}
