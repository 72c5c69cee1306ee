package cliconfig

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// hangups receives SIGHUP once CatchHangups ran; nil before, and then a
// Reloader waits for nothing.
var hangups chan os.Signal

// CatchHangups makes SIGHUP stop nothing (by default it kills a Go
// program): from now on each one goes to the running command's Reloader,
// and is dropped by a command without one. Call it first in main.
func CatchHangups() {
	hangups = make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
}

// LogLevel returns the level a command runs at: --log-level when given
// explicitly, else fileLevel (its config file's logLevel) when set, else
// the --log-level default.
func LogLevel(cmd *cobra.Command, fileLevel string) (slog.Level, error) {
	text, what := fileLevel, "logLevel"
	if f := cmd.Flag("log-level"); f != nil && (f.Changed || fileLevel == "") {
		text, what = f.Value.String(), "--log-level"
	}
	var level slog.Level
	if text == "" {
		return slog.LevelInfo, nil
	}
	if err := level.UnmarshalText([]byte(text)); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return level, nil
}

// ApplyLogging sets the level of the default logger (see SetupLogging) to
// LogLevel(cmd, fileLevel) and its format to LogFormat(cmd, fileFormat);
// on error it changes nothing. Call it before building the components
// that keep slog.Default().
func ApplyLogging(cmd *cobra.Command, fileLevel, fileFormat string) error {
	level, err := LogLevel(cmd, fileLevel)
	if err != nil {
		return err
	}
	format, err := LogFormat(cmd, fileFormat)
	if err != nil {
		return err
	}
	h, err := newLogHandler(format, logOutput)
	if err != nil {
		return err
	}
	logLevel.Set(level)
	slog.SetDefault(slog.New(h))
	return nil
}

// Reloader re-reads a command's configuration at every SIGHUP while the
// command runs. The log level (the configuration's logLevel, unless
// --log-level was given) and the fields named in Live take effect at once
// (logFormat does not: it is named as needing a restart);
// every other field that differs from the configuration the command
// started with is named in the log as taking effect only after a restart.
// A configuration that fails to load, validate or apply is logged and
// changes nothing.
type Reloader[T any] struct {
	// Cmd is the running command, for --log-level. Required.
	Cmd *cobra.Command
	// Path is the config file, for the log; "" means there is none, and
	// then only the flags apply.
	Path string
	// Load reads and validates the configuration the way the command did
	// at start. Required.
	Load func() (T, error)
	// LogLevel returns the configuration's logLevel ("" when unset); nil
	// means the configuration has none.
	LogLevel func(T) string
	// Live are the JSON names (dotted for nested fields) of the fields,
	// besides logLevel, that Apply puts into effect; Apply receives the new
	// configuration when one of them changed. Empty and nil: none.
	Live  []string
	Apply func(T) error
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Run handles every SIGHUP until ctx is done. started is the configuration
// the command runs with.
func (r Reloader[T]) Run(ctx context.Context, started T) {
	applied := started
	for {
		select {
		case <-ctx.Done():
			return
		case <-hangups:
		}
		applied = r.reload(started, applied)
	}
}

// reload loads the configuration and applies what it can; it returns the
// configuration in effect afterwards (applied when nothing changed).
func (r Reloader[T]) reload(started, applied T) T {
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Info("SIGHUP received; reloading the configuration", "config", r.Path)
	next, err := r.Load()
	var level slog.Level
	if err == nil {
		fileLevel := ""
		if r.LogLevel != nil {
			fileLevel = r.LogLevel(next)
		}
		level, err = LogLevel(r.Cmd, fileLevel)
	}
	if err != nil {
		log.Error("configuration reload failed; nothing changed", "config", r.Path, "error", err.Error())
		return applied
	}
	live := append([]string{"logLevel"}, r.Live...)
	isLive := func(f string) bool {
		return slices.ContainsFunc(live, func(l string) bool { return f == l || strings.HasPrefix(f, l+".") })
	}
	var reloaded, restart []string
	for _, f := range ChangedFields(applied, next) {
		if isLive(f) {
			reloaded = append(reloaded, f)
		}
	}
	for _, f := range ChangedFields(started, next) {
		if !isLive(f) {
			restart = append(restart, f)
		}
	}
	if r.Apply != nil && slices.ContainsFunc(reloaded, func(f string) bool { return f != "logLevel" }) {
		if err := r.Apply(next); err != nil {
			log.Error("configuration reload failed; nothing changed", "config", r.Path, "error", err.Error())
			return applied
		}
	}
	logLevel.Set(level)
	log.Info("configuration reloaded", "config", r.Path, "reloaded", nonNil(reloaded), "log_level", level.String(),
		"restart_required", nonNil(restart))
	if len(restart) > 0 {
		log.Warn("configuration changes take effect only after a restart", "config", r.Path, "fields", restart)
	}
	return next
}

// nonNil makes an empty list log as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ChangedFields returns the JSON names of the fields that differ between a
// and b, two structs of one type: the fields of nested structs by dotted
// name (store.dsn), anything else as a whole (clusters).
func ChangedFields(a, b any) []string {
	return changedFields(reflect.ValueOf(a), reflect.ValueOf(b), "")
}

func changedFields(a, b reflect.Value, prefix string) []string {
	var out []string
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		fa, fb := a.Field(i), b.Field(i)
		if reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			continue
		}
		var nested []string
		if f.Type.Kind() == reflect.Struct {
			nested = changedFields(fa, fb, path)
		}
		if len(nested) == 0 {
			nested = []string{path}
		}
		out = append(out, nested...)
	}
	return out
}
