package checkpoint

import (
	"cmp"
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/meshca/meshca/store"
)

// DirConfig places a server's checkpointer in its data directory. Zero
// fields take the defaults given.
type DirConfig struct {
	// DataDir is the server's data directory. Required.
	DataDir string
	// KeyFile is the signing key (PEM, mode 0600), created if missing.
	// Default DATA_DIR/audit-checkpoint-key.pem.
	KeyFile string
	// Dir receives the checkpoints. Default DATA_DIR/audit-checkpoints.
	Dir string
	// Interval and Keep: see Config.
	Interval time.Duration
	Keep     int
}

// Start signs checkpoints of head's chain, named name, in the background
// until stop is called. stop returns after the final checkpoint, whose
// failure is logged (the server is stopping: there is no one to return it
// to), so call it before closing the store.
func Start(head store.AuditHeadReader, cfg DirConfig, name string, log *slog.Logger) (stop func(), err error) {
	key, err := LoadOrCreateKey(cmp.Or(cfg.KeyFile, filepath.Join(cfg.DataDir, "audit-checkpoint-key.pem")))
	if err != nil {
		return nil, err
	}
	cp, err := newCheckpointer(checkpointerConfig{
		Head: head, Signer: key, Dir: cfg.Path(), Name: name,
		Interval: cfg.Interval, Keep: cfg.Keep, Logger: log,
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

// Path is the directory Start writes the checkpoints of c to.
func (c DirConfig) Path() string {
	return cmp.Or(c.Dir, filepath.Join(c.DataDir, "audit-checkpoints"))
}

// Latest reads the newest checkpoint in dir (LatestFile) and verifies it
// with the public key the checkpointer wrote beside it (PublicKeyFile).
// It reports what this server signed last; an auditor verifies against a
// key kept elsewhere instead.
func Latest(dir string) (Checkpoint, error) {
	pub, err := ReadPublicKey(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		return Checkpoint{}, err
	}
	return ReadFile(filepath.Join(dir, LatestFile), pub)
}
