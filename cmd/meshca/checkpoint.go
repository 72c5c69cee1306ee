package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
)

// checkpointConfig is `store.checkpoint:`: signed audit checkpoints, which
// anchor the audit chain outside the database (see package
// store/checkpoint). They are always on.
type checkpointConfig struct {
	// Interval is how often the chain head is read, and a checkpoint
	// signed if it moved. Default 1m.
	Interval duration `json:"interval,omitempty"`
	// KeyFile is the ECDSA signing key (PEM, mode 0600), created if missing.
	// Default DATA_DIR/audit-checkpoint-key.pem. It must not be readable by
	// whoever can write the database.
	KeyFile string `json:"keyFile,omitempty"`
	// Dir receives the checkpoints, latest.json and the public key
	// checkpoint-key.pub.pem. Default DATA_DIR/audit-checkpoints.
	Dir string `json:"dir,omitempty"`
	// Keep is how many checkpoint files are kept. Default 10080 (a week at
	// one a minute).
	Keep int `json:"keep,omitempty"`
}

// startCheckpoints signs checkpoints of db's audit chain, named name, until
// stop is called; stop returns after a final checkpoint, so call it before
// closing db.
func startCheckpoints(db store.AuditHeadReader, cfg checkpointConfig, dataDir, name string, log *slog.Logger) (stop func(), err error) {
	key, err := checkpoint.LoadOrCreateKey(cmpOr(cfg.KeyFile, filepath.Join(dataDir, "audit-checkpoint-key.pem")))
	if err != nil {
		return nil, err
	}
	cp, err := checkpoint.New(checkpoint.Config{
		Head: db, Signer: key, Dir: cmpOr(cfg.Dir, filepath.Join(dataDir, "audit-checkpoints")), Name: name,
		Interval: time.Duration(cfg.Interval), Keep: cfg.Keep, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cp.Run(ctx); err != nil {
			log.Error("final audit checkpoint failed", "chain", name, "error", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
