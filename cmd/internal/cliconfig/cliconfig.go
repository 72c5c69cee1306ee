// Package cliconfig is what the meshca binaries share to read their
// configuration: strict YAML files, durations written as "90m", and the
// --log-level flag.
package cliconfig

import (
	"encoding/json"
	"errors"
	"fmt"
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

// logLevel is the level of the default logger; ApplyLogLevel changes it
// while the process runs.
var logLevel slog.LevelVar

// SetupLogging adds the persistent --log-level flag to root and makes every
// command log JSON at that level to stderr. A command with a config file
// may change the level with ApplyLogLevel.
func SetupLogging(root *cobra.Command) {
	var flagLevel string
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		var level slog.Level
		if err := level.UnmarshalText([]byte(flagLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		logLevel.Set(level)
		slog.SetDefault(slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: &logLevel})))
		return nil
	}
	root.PersistentFlags().StringVar(&flagLevel, "log-level", "info", "log level: debug, info, warn or error (logs go to stderr as JSON)")
}
