package cliconfig

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runLogging runs a command set up with SetupLogging and args; its RunE
// logs one info line. It returns stderr and the error.
func runLogging(t *testing.T, args ...string) (string, error) {
	t.Helper()
	prev := slog.Default()
	t.Cleanup(func() { slog.SetDefault(prev) })
	cmd := &cobra.Command{Use: "test", SilenceUsage: true, SilenceErrors: true,
		RunE: func(*cobra.Command, []string) error { slog.Info("hello", "k", "v"); return nil }}
	SetupLogging(cmd)
	var stderr bytes.Buffer
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return stderr.String(), err
}

func TestLogFormatFlag(t *testing.T) {
	out, err := runLogging(t)
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(out), &line); err != nil || line["msg"] != "hello" || line["k"] != "v" {
		t.Errorf("default format: %q, want one JSON line (%v)", out, err)
	}
	out, err = runLogging(t, "--log-format", "text")
	if err != nil || !strings.Contains(out, `level=INFO msg=hello k=v`) || strings.HasPrefix(out, "{") {
		t.Errorf("--log-format text: %q, %v", out, err)
	}
	out, err = runLogging(t, "--log-format", "text", "--log-level", "warn")
	if err != nil || out != "" {
		t.Errorf("--log-level warn logged an info line: %q, %v", out, err)
	}
	_, err = runLogging(t, "--log-format", "logfmt")
	if err == nil || err.Error() != `--log-format: log format "logfmt": want json or text` {
		t.Errorf("--log-format logfmt: %v", err)
	}
}

// A reload applies the file's logLevel unless --log-level was given.
func TestReloadLevelPrecedence(t *testing.T) {
	type config struct {
		LogLevel string `json:"logLevel,omitempty"`
	}
	for _, tc := range []struct {
		name string
		args []string
		want slog.Level
	}{
		{"file", nil, slog.LevelDebug},
		{"flag wins", []string{"--log-level", "error"}, slog.LevelError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := logLevel.Level()
			t.Cleanup(func() { logLevel.Set(prev) })
			cmd := &cobra.Command{Use: "test"}
			SetupLogging(cmd)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			logLevel.Set(slog.LevelInfo)
			r := Reloader[config]{
				Cmd: cmd, Load: func() (config, error) { return config{LogLevel: "debug"}, nil },
				LogLevel: func(c config) string { return c.LogLevel }, Logger: slog.New(slog.DiscardHandler),
			}
			r.reload(config{LogLevel: "info"}, config{LogLevel: "info"})
			if got := logLevel.Level(); got != tc.want {
				t.Errorf("level after reload %v, want %v", got, tc.want)
			}
			if tc.want == slog.LevelDebug && !slog.New(mustHandler(t)).Enabled(context.Background(), slog.LevelDebug) {
				t.Error("a handler made after the reload does not log debug")
			}
		})
	}
}

func mustHandler(t *testing.T) slog.Handler {
	t.Helper()
	h, err := newLogHandler(LogFormatJSON, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}
