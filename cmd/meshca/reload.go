package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
)

// reloadOnHangup applies the log level and format of started, the
// configuration the command runs with (level and format return its
// logLevel and logFormat), and then, until the command's context is done,
// re-reads the configuration with load at every SIGHUP: the log level takes
// effect, and the log names every other field that changed, which needs a
// restart.
func reloadOnHangup[T any](cmd *cobra.Command, path string, started T, load func() (T, error), level, format func(T) string) error {
	if err := cliconfig.ApplyLogging(cmd, level(started), format(started)); err != nil {
		return err
	}
	go cliconfig.Reloader[T]{Cmd: cmd, Path: path, Load: load, LogLevel: level}.Run(cmd.Context(), started)
	return nil
}

// reloadDev starts reloadOnHangup for `meshca dev` running with cfg (the
// config file with the flags given applied over it).
func reloadDev(cmd *cobra.Command, path string, cfg devConfig) error {
	load := func() (devConfig, error) {
		if path == "" {
			return cfg, nil
		}
		next := defaultDevConfig()
		if err := loadConfig(path, &next); err != nil {
			return devConfig{}, err
		}
		applyChangedFlags(cmd, &next, cfg)
		return next, nil
	}
	return reloadOnHangup(cmd, path, cfg, load, func(c devConfig) string { return c.LogLevel },
		func(c devConfig) string { return c.LogFormat })
}

// reloadRoot starts reloadOnHangup for `meshca root serve` running with cfg.
func reloadRoot(cmd *cobra.Command, path string, cfg rootConfig) error {
	load := func() (rootConfig, error) {
		next := defaultRootConfig()
		if err := loadConfig(path, &next); err != nil {
			return rootConfig{}, err
		}
		if err := next.validate(); err != nil {
			return rootConfig{}, fmt.Errorf("config %s: %w", path, err)
		}
		return next, nil
	}
	return reloadOnHangup(cmd, path, cfg, load, func(c rootConfig) string { return c.LogLevel },
		func(c rootConfig) string { return c.LogFormat })
}

// loadIssuerConfig reads and validates the issuer's config file.
func loadIssuerConfig(path string) (issuerConfig, error) {
	cfg := defaultIssuerConfig()
	if err := loadConfig(path, &cfg); err != nil {
		return issuerConfig{}, err
	}
	if err := cfg.validate(); err != nil {
		return issuerConfig{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// issuerReloader re-reads the issuer's config file at every SIGHUP: the log
// level and the clusters (attestors, caches, policies) take effect at once,
// the attestor being replaced whole in live; other changed fields are
// logged as needing a restart.
func issuerReloader(cmd *cobra.Command, path string, started issuerConfig, live *liveAttestor, log *slog.Logger) cliconfig.Reloader[issuerConfig] {
	return cliconfig.Reloader[issuerConfig]{
		Cmd: cmd, Path: path, Load: func() (issuerConfig, error) { return loadIssuerConfig(path) },
		LogLevel: func(c issuerConfig) string { return c.LogLevel },
		Live:     []string{"clusters"},
		Apply: func(next issuerConfig) error {
			// Only the clusters change: the local cluster and the data
			// dir stay those the issuer started with.
			cfg := started
			cfg.Clusters = next.Clusters
			a, err := buildAttestor(cfg, log)
			if err != nil {
				return err
			}
			live.set(a)
			return nil
		},
	}
}

// liveAttestor is an attestor that can be replaced while the issuer runs:
// each request uses the one current when it starts.
type liveAttestor struct {
	cur atomic.Pointer[attest.Attestor]
}

var _ attest.Attestor = (*liveAttestor)(nil)

func (l *liveAttestor) set(a attest.Attestor) { l.cur.Store(&a) }

// Attest implements attest.Attestor.
func (l *liveAttestor) Attest(ctx context.Context, req attest.Request) (attest.Identity, error) {
	return (*l.cur.Load()).Attest(ctx, req)
}
