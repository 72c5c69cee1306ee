package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
	"github.com/meshca/meshca/internal/testkit"
)

// hangupAndWait sends the process SIGHUP and waits for the n-th log line
// containing msg, which it returns.
func hangupAndWait(t *testing.T, logs *testkit.LogBuffer, msg string, n int) string {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var found []string
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, msg) {
				found = append(found, line)
			}
		}
		if len(found) >= n {
			return found[n-1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %q line after SIGHUP:\n%s", msg, logs.String())
	return ""
}

// TestIssuerHangupReloadsClusters: at SIGHUP the issuer's attestor follows
// the config file's clusters and policies, while a file that does not
// validate changes nothing and other changed fields are named as needing a
// restart.
func TestIssuerHangupReloadsClusters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "issuer.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte("dataDir: "+dir+"\ncluster: dev\n"+s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("clusters: [{name: dev, attestor: dev}]\n")
	started, err := loadIssuerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	live := &liveAttestor{}
	a, err := buildAttestor(started, log)
	if err != nil {
		t.Fatal(err)
	}
	live.set(a)
	signer, err := attest.LoadOrCreateDevSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	token, err := signer.Mint(attest.TokenSpec{Namespace: "default", ServiceAccount: "web"})
	if err != nil {
		t.Fatal(err)
	}
	attestWeb := func() error {
		_, err := live.Attest(context.Background(), attest.Request{Token: token, ClusterID: "dev"})
		return err
	}
	if err := attestWeb(); err != nil {
		t.Fatalf("before the reload: %v", err)
	}

	cliconfig.CatchHangups()
	r := issuerReloader(&cobra.Command{}, path, started, live, log)
	r.Logger = log
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, started)

	write("clusters: [{name: dev, attestor: dev, policy: {deny: [nonsense]}}]\n")
	hangupAndWait(t, logs, "configuration reload failed; nothing changed", 1)
	if err := attestWeb(); err != nil {
		t.Errorf("after a reload that failed: %v, want the old policy", err)
	}

	write("listen: 127.0.0.1:1\nclusters: [{name: dev, attestor: dev, policy: {deny: [default/web]}}]\n")
	line := hangupAndWait(t, logs, "configuration reloaded", 1)
	if !strings.Contains(line, `"reloaded":["clusters"]`) || !strings.Contains(line, `"restart_required":["listen"]`) {
		t.Errorf("reload log line %s, want clusters reloaded and listen needing a restart", line)
	}
	if err := attestWeb(); err == nil {
		t.Error("default/web attested after the reloaded policy denies it")
	}
}
