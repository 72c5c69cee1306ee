package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
	"github.com/meshca/meshca/internal/testkit"
)

// catchHangups runs cliconfig.CatchHangups once for the test binary: the
// Reloaders of earlier tests may still be reading its channel.
var catchHangups = sync.OnceFunc(cliconfig.CatchHangups)

// hangupAndWait sends the process SIGHUP and waits for the n-th log line
// containing msg, which it returns.
func hangupAndWait(t *testing.T, logs *testkit.LogBuffer, msg string, n int) string {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	return waitLine(t, logs, msg, n)
}

// waitLine waits for the n-th log line containing msg and returns it.
func waitLine(t *testing.T, logs *testkit.LogBuffer, msg string, n int) string {
	t.Helper()
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

	catchHangups()
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

// loggingCommand is a command with the persistent logging flags, run as
// the CLI runs it (args parsed, PersistentPreRunE done), logging to logs;
// its context ends with the test. The default logger is restored after.
func loggingCommand(t *testing.T, logs *testkit.LogBuffer, args ...string) *cobra.Command {
	t.Helper()
	prev := slog.Default()
	t.Cleanup(func() { slog.SetDefault(prev) })
	cmd := &cobra.Command{Use: "test"}
	cliconfig.SetupLogging(cmd)
	cmd.SetErr(logs)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	if err := cmd.PersistentPreRunE(cmd, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cmd.SetContext(ctx)
	return cmd
}

// TestRootHangupChangesLogLevel: `meshca root serve` starts at its config
// file's logLevel and logFormat; a SIGHUP after the file's logLevel changed
// changes the level at once, while a changed logFormat is named as needing
// a restart.
func TestRootHangupChangesLogLevel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	load := func() rootConfig {
		cfg := defaultRootConfig()
		if err := loadConfig(path, &cfg); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	ctx := context.Background()
	catchHangups()

	logs := &testkit.LogBuffer{}
	cmd := loggingCommand(t, logs)
	write("logLevel: warn\nlogFormat: text\n")
	if err := reloadRoot(cmd, path, load()); err != nil {
		t.Fatal(err)
	}
	if slog.Default().Enabled(ctx, slog.LevelInfo) || !slog.Default().Enabled(ctx, slog.LevelWarn) {
		t.Fatal("root not at the file's level warn")
	}
	slog.Warn("text line", "k", "v")
	if !strings.Contains(logs.String(), `level=WARN msg="text line" k=v`) {
		t.Fatalf("logFormat text not applied:\n%s", logs.String())
	}
	write("logLevel: debug\nlogFormat: json\n")
	line := hangupAndWait(t, logs, "configuration reloaded", 1)
	if !slog.Default().Enabled(ctx, slog.LevelDebug) || !strings.Contains(line, "log_level=DEBUG") {
		t.Errorf("after SIGHUP with logLevel debug: debug enabled %v, log %s", slog.Default().Enabled(ctx, slog.LevelDebug), line)
	}
	if w := waitLine(t, logs, "only after a restart", 1); !strings.Contains(w, "logFormat") {
		t.Errorf("changed logFormat not named as needing a restart: %s", w)
	}
}

// TestIssuerHangupChangesLogLevel: the issuer's Reloader changes the level
// of the default logger when the file's logLevel changes.
func TestIssuerHangupChangesLogLevel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "issuer.yaml")
	write := func(level string) {
		s := "dataDir: " + dir + "\ncluster: dev\nclusters: [{name: dev, attestor: dev}]\nlogLevel: " + level + "\n"
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("info")
	started, err := loadIssuerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	cmd := loggingCommand(t, logs)
	if err := cliconfig.ApplyLogging(cmd, started.LogLevel, started.LogFormat); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if slog.Default().Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug enabled at logLevel info")
	}
	catchHangups()
	go issuerReloader(cmd, path, started, &liveAttestor{}, slog.Default()).Run(cmd.Context(), started)
	write("debug")
	line := hangupAndWait(t, logs, "configuration reloaded", 1)
	if !slog.Default().Enabled(ctx, slog.LevelDebug) || !strings.Contains(line, `"reloaded":["logLevel"]`) {
		t.Errorf("after SIGHUP with logLevel debug: debug enabled %v, log %s", slog.Default().Enabled(ctx, slog.LevelDebug), line)
	}
}

// An unknown logFormat in the config file is an error naming the field.
func TestLogFormatFromFileRefused(t *testing.T) {
	cmd := loggingCommand(t, &testkit.LogBuffer{})
	err := cliconfig.ApplyLogging(cmd, "", "yaml")
	if err == nil || !strings.Contains(err.Error(), `logFormat: log format "yaml": want json or text`) {
		t.Fatalf("ApplyLogging with logFormat yaml: %v", err)
	}
}
