package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/sqlite"
)

// storeConfig selects the store backend. It appears as `store:` in every
// component's YAML config.
type storeConfig struct {
	// Driver is "sqlite" (the embedded default) or "postgres". Empty means
	// postgres when DSN is a postgres:// or postgresql:// URL, else sqlite.
	Driver string `json:"driver,omitempty"`
	// DSN is the PostgreSQL connection string, or the SQLite file path. For
	// SQLite an empty DSN means DATA_DIR/meshca.db. It may hold a password:
	// it is never logged.
	DSN string `json:"dsn,omitempty"`
	// DSNFile is a file holding the PostgreSQL DSN (surrounding space
	// trimmed), e.g. a key of a Kubernetes Secret mounted read-only, so
	// that the password stays out of the config. Read when the store
	// opens; not with DSN. Setting it means driver postgres.
	DSNFile string `json:"dsnFile,omitempty"`
	// Retention prunes the records of expired certificates (never audit
	// events) in the background while the store is open.
	Retention retentionConfig `json:"retention,omitempty"`
	// Checkpoint configures the signed audit checkpoints of the issuer and
	// the root.
	Checkpoint checkpointConfig `json:"checkpoint,omitempty"`
}

// retentionConfig is `store.retention:`.
type retentionConfig struct {
	// Grace is how long a certificate's record is kept after the
	// certificate expired. Default 168h (7 days).
	Grace duration `json:"grace,omitempty"`
	// Interval is the time between two prunes; the first runs at start.
	// Default 1h.
	Interval duration `json:"interval,omitempty"`
	// Disabled keeps every certificate record for ever.
	Disabled bool `json:"disabled,omitempty"`
}

// driver returns the backend cfg selects.
func (c storeConfig) driver() string {
	if c.Driver != "" {
		return c.Driver
	}
	if c.DSNFile != "" {
		return "postgres"
	}
	if strings.HasPrefix(c.DSN, "postgres://") || strings.HasPrefix(c.DSN, "postgresql://") {
		return "postgres"
	}
	return "sqlite"
}

func (c storeConfig) validate() error {
	switch d := c.driver(); {
	case d != "sqlite" && d != "postgres":
		return fmt.Errorf("store driver %q is not supported (want sqlite or postgres)", c.Driver)
	case c.DSN != "" && c.DSNFile != "":
		return errors.New("store: set dsn or dsnFile, not both")
	case d != "postgres" && c.DSNFile != "":
		return errors.New("store: dsnFile is for driver postgres")
	case d == "postgres" && c.DSN == "" && c.DSNFile == "":
		return errors.New("store driver postgres needs a dsn (or dsnFile)")
	case c.Retention.Grace < 0 || c.Retention.Interval < 0:
		return errors.New("store retention: grace and interval must not be negative")
	case c.Checkpoint.Interval < 0 || c.Checkpoint.Keep < 0:
		return errors.New("store checkpoint: interval and keep must not be negative")
	}
	return nil
}

// maxDSNFileSize bounds what postgresDSN reads.
const maxDSNFileSize = 64 << 10

// postgresDSN is DSN, or the content of DSNFile.
func (c storeConfig) postgresDSN() (string, error) {
	if c.DSNFile == "" {
		return c.DSN, nil
	}
	f, err := os.Open(c.DSNFile)
	if err != nil {
		return "", fmt.Errorf("store dsnFile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDSNFileSize+1))
	if err != nil {
		return "", fmt.Errorf("store dsnFile: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	switch {
	case len(b) > maxDSNFileSize:
		return "", fmt.Errorf("store dsnFile %s is larger than %d bytes", c.DSNFile, maxDSNFileSize)
	case dsn == "":
		return "", fmt.Errorf("store dsnFile %s is empty", c.DSNFile)
	}
	return dsn, nil
}

// backend is what both store backends implement.
type backend interface {
	store.Store
	store.RootStore
	store.RevocationStore
	store.AuditHeadReader
	store.StandaloneRootStore
	store.IssuerCRLStore
	store.JWTAuthorityStore
	VerifyAuditChain(ctx context.Context) error
	// VerifyAuditHead is what the admin API's VerifyAudit reports from.
	VerifyAuditHead(ctx context.Context) (store.ChainHead, error)
}

// openBackend opens the configured backend, running migrations, and warns
// if a PostgreSQL role could disable the audit log's triggers.
func openBackend(ctx context.Context, cfg storeConfig, dataDir string) (backend, error) {
	return openBackendWithMetrics(ctx, cfg, dataDir, nil)
}

// openBackendWithMetrics is openBackend with the group commit reporting to
// m (nil: no metrics).
func openBackendWithMetrics(ctx context.Context, cfg storeConfig, dataDir string, m *store.Metrics) (backend, error) {
	gc := store.GroupCommitConfig{Metrics: m}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.driver() == "postgres" {
		dsn, err := cfg.postgresDSN()
		if err != nil {
			return nil, err
		}
		s, err := postgres.Open(ctx, postgres.Config{DSN: dsn, GroupCommit: gc})
		if err != nil {
			return nil, err // not a nil *postgres.Store in the interface
		}
		warnAuditOwner(ctx, s)
		return s, nil
	}
	path := cfg.DSN
	if path == "" {
		path = filepath.Join(dataDir, "meshca.db")
	}
	return sqlite.Open(ctx, sqlite.Config{Path: path, GroupCommit: gc})
}

// warnAuditOwner logs a warning when meshca runs as a database role that
// could disable the audit log's triggers, which a separate runtime role
// (meshca migrate --grant-to) cannot.
func warnAuditOwner(ctx context.Context, s *postgres.Store) {
	can, err := s.CanBypassAuditTriggers(ctx)
	if err != nil {
		slog.Warn("cannot check the database role's privileges on the audit log", "error", err)
		return
	}
	if can {
		slog.Warn("the database role owns the audit log's tables (or is a superuser) and could disable its append-only triggers; " +
			"run meshca as a separate runtime role: meshca migrate --grant-to ROLE")
	}
}

// storeTarget turns the --store-dsn and --data-dir flags of the commands
// that work on a database directly (migrate, audit verify) into a store
// config: exactly one of them must be set.
func storeTarget(dsn, dataDir string) (storeConfig, error) {
	switch {
	case dsn != "" && dataDir != "":
		return storeConfig{}, errors.New("give --store-dsn or --data-dir, not both")
	case dataDir != "":
		return storeConfig{Driver: "sqlite", DSN: filepath.Join(dataDir, "meshca.db")}, nil
	case dsn != "":
		cfg := storeConfig{DSN: dsn}
		return cfg, cfg.validate()
	}
	return storeConfig{}, errors.New("--store-dsn or --data-dir is required")
}
