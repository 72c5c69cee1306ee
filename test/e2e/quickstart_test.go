package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickStart follows the quick start exactly as a newcomer types it, in
// one directory with meshca's defaults: `meshca dev`, then
// `meshca dev token ... > token`, then `meshca cert fetch`, and checks the
// result with openssl.
func TestQuickStart(t *testing.T) {
	requireOpenSSL(t)
	srv := startDev(t, devOptions{}) // no --data-dir: ./.meshca-dev
	if !strings.Contains(srv.Stdout(), srv.Addr) {
		t.Errorf("the banner does not name the address %s:\n%s", srv.Addr, srv.Stdout())
	}
	mustSucceed(t, "meshca dev token", runShell(t, srv.Dir,
		"meshca dev token --namespace default --service-account web > token"))

	tests := []struct {
		name  string
		flags string
		want  certWant
	}{
		{name: "default", want: certWant{TTL: time.Hour, KeyType: "ec-p256"}},
		{name: "rsa-2048", flags: "--key-type rsa-2048", want: certWant{TTL: time.Hour, KeyType: "rsa-2048"}},
		{name: "ttl 10m", flags: "--ttl 10m", want: certWant{TTL: 10 * time.Minute, KeyType: "ec-p256"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := fmt.Sprintf("certs%d", i)
			r := runShell(t, srv.Dir, fmt.Sprintf(
				"meshca cert fetch --issuer %s --ca-bundle .meshca-dev/bundle.pem --token-file token --out %s %s",
				srv.Addr, out, tt.flags))
			if r.code != 0 {
				t.Fatalf("cert fetch: %s\n%s", r, srv.Output())
			}
			tt.want.ID, tt.want.Bundle = workloadID, srv.BundlePath()
			checkFetched(t, filepath.Join(srv.Dir, out), tt.want)
		})
	}

	// The banner tells the newcomer what to type next; pasted as printed,
	// those commands must work too.
	t.Run("banner next steps", func(t *testing.T) { checkBannerSteps(t, srv) })
}

// checkBannerSteps runs the commands srv's banner prints, as printed, in
// srv.Dir, and checks the certificate they fetch.
func checkBannerSteps(t *testing.T, srv *devServer) {
	t.Helper()
	// Commands are the indented lines that start with "meshca ".
	var cmds []string
	for _, line := range strings.Split(srv.Stdout(), "\n") {
		if cmd := strings.TrimSpace(line); cmd != line && strings.HasPrefix(cmd, "meshca ") {
			cmds = append(cmds, cmd)
		}
	}
	if len(cmds) != 2 || !strings.Contains(cmds[0], "dev token") || !strings.Contains(cmds[1], "cert fetch") {
		t.Fatalf("banner shows commands %q, want `meshca dev token ...` then `meshca cert fetch ...`:\n%s", cmds, srv.Stdout())
	}
	for _, cmd := range cmds {
		if r := runShell(t, srv.Dir, cmd); r.code != 0 {
			t.Fatalf("%s: %s\n%s", cmd, r, srv.Output())
		}
	}
	out := flagValue(cmds[1], "--out")
	if out == "" {
		t.Fatalf("banner fetch command %q has no --out", cmds[1])
	}
	checkFetched(t, filepath.Join(srv.Dir, out), certWant{ID: workloadID, TTL: time.Hour, KeyType: "ec-p256", Bundle: srv.BundlePath()})
}

// flagValue returns the word after flag in a shell command line.
func flagValue(cmdline, flag string) string {
	words := strings.Fields(cmdline)
	for i, w := range words[:max(len(words)-1, 0)] {
		if w == flag {
			return words[i+1]
		}
	}
	return ""
}
