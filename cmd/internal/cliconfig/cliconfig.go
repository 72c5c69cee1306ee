// Package cliconfig is what the meshca binaries share to read their
// configuration: strict YAML files, durations written as "90m", and the
// --log-level and --log-format flags.
package cliconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Duration is a time.Duration written as a Go duration string ("90m") in
// YAML and JSON.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1h\" or \"30m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Load decodes a YAML file into cfg strictly: field names are
// case-sensitive, and unknown fields, duplicate keys and type mismatches are
// errors naming the file. (encoding/json, under sigs.k8s.io/yaml's own
// UnmarshalStrict, would match "leafttl" to leafTTL and let the last of two
// spellings win.)
func Load(path string, cfg any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := DecodeStrict(data, cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

func DecodeStrict(data []byte, cfg any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(js, cfg)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// logLevel is the level of the default logger; ApplyLogging and a
// Reloader change it while the process runs.
var logLevel slog.LevelVar

// Log formats of --log-format and a config file's logFormat.
const (
	LogFormatJSON = "json"
	LogFormatText = "text"
	// DefaultLogFormat is the format without --log-format or logFormat.
	DefaultLogFormat = LogFormatJSON
)

// logOutput is where the default logger writes: the running command's
// stderr, set by SetupLogging.
var logOutput io.Writer = os.Stderr

// newLogHandler returns a handler writing format to w at logLevel.
func newLogHandler(format string, w io.Writer) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: &logLevel}
	switch format {
	case LogFormatJSON:
		return slog.NewJSONHandler(w, opts), nil
	case LogFormatText:
		return slog.NewTextHandler(w, opts), nil
	default:
		return nil, fmt.Errorf("log format %q: want %s or %s", format, LogFormatJSON, LogFormatText)
	}
}

// Help texts of the logging flags, which name how they combine with a
// config file and SIGHUP.
const (
	logLevelUsage = "log level: debug, info, warn or error. Without this flag a server's config file logLevel applies, " +
		"and a SIGHUP that re-reads a changed logLevel changes the level at once (root, issuer, dev, agent); " +
		"given explicitly, the flag wins, also over reloads"
	logFormatUsage = "log format on stderr: json (one JSON object a line) or text (key=value). Without this flag a " +
		"server's config file logFormat applies, read at start (a change needs a restart)"
)

// SetupLogging adds the persistent --log-level and --log-format flags to
// root and makes every command log at that level, in that format (JSON by
// default), to its stderr. A command with a config file applies the file's
// logLevel and logFormat with ApplyLogging; a Reloader changes the level
// at SIGHUP.
func SetupLogging(root *cobra.Command) {
	var flagLevel, flagFormat string
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		var level slog.Level
		if err := level.UnmarshalText([]byte(flagLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		logOutput = cmd.ErrOrStderr()
		h, err := newLogHandler(flagFormat, logOutput)
		if err != nil {
			return fmt.Errorf("--log-format: %w", err)
		}
		logLevel.Set(level)
		slog.SetDefault(slog.New(h))
		return nil
	}
	root.PersistentFlags().StringVar(&flagLevel, "log-level", "info", logLevelUsage)
	root.PersistentFlags().StringVar(&flagFormat, "log-format", DefaultLogFormat, logFormatUsage)
}

// LogFormat returns the log format a command runs with: --log-format when
// given explicitly, else fileFormat (its config file's logFormat) when
// set, else the --log-format default. An unknown format is an error naming
// where it came from.
func LogFormat(cmd *cobra.Command, fileFormat string) (string, error) {
	text, what := fileFormat, "logFormat"
	if f := cmd.Flag("log-format"); f != nil && (f.Changed || fileFormat == "") {
		text, what = f.Value.String(), "--log-format"
	}
	if text == "" {
		return DefaultLogFormat, nil
	}
	if _, err := newLogHandler(text, io.Discard); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return text, nil
}
