package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

// storeConfig selects the store backend. It appears as `store:` in every
// component's YAML config.
type storeConfig struct {
	// Driver is "sqlite" (the embedded default) or "postgres".
	Driver string `json:"driver,omitempty"`
	// DSN is the PostgreSQL connection string, or the SQLite file path. For
	// SQLite an empty DSN means DATA_DIR/meshca.db.
	DSN string `json:"dsn,omitempty"`
}

// openStore opens the configured store, running migrations. The caller
// closes it.
func openStore(ctx context.Context, cfg storeConfig, dataDir string) (store.Store, error) {
	switch cfg.Driver {
	case "", "sqlite":
		path := cfg.DSN
		if path == "" {
			path = filepath.Join(dataDir, "meshca.db")
		}
		return sqlite.Open(ctx, sqlite.Config{Path: path})
	default:
		return nil, fmt.Errorf("store driver %q is not supported (want sqlite)", cfg.Driver)
	}
}
