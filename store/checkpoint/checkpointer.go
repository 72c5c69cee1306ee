package checkpoint

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/google/renameio/v2"

	"github.com/meshca/meshca/store"
)

// Files a Checkpointer writes in its directory.
const (
	// LatestFile is a copy of the newest checkpoint.
	LatestFile = "latest.json"
	// PublicKeyFile is the PEM public key that verifies the checkpoints.
	PublicKeyFile = "checkpoint-key.pub.pem"
)

// defaultInterval is how often a Checkpointer looks at the head.
const defaultInterval = time.Minute

// defaultKeep is how many checkpoint files a Checkpointer keeps: a week's
// worth at one a minute.
const defaultKeep = 7 * 24 * 60

// fileName matches the names of checkpoint files: the seq, zero-padded so
// that names sort in seq order, and the time.
var fileName = regexp.MustCompile(`^[0-9]{20}-[0-9]{8}T[0-9]{6}Z\.json$`)

// checkpointerConfig configures a Checkpointer.
type checkpointerConfig struct {
	// Head reads the audit chain's head, and the hash at the last
	// checkpoint's seq before a later head is signed. Required.
	Head store.AuditHeadReader
	// Signer is the ECDSA key that signs checkpoints. Required. It must not
	// be stored in the database whose chain it anchors.
	Signer crypto.Signer
	// Dir receives the checkpoint files, LatestFile and PublicKeyFile; New
	// creates it (mode 0755) if missing. Required. Checkpoints hold no
	// secret: ship the directory elsewhere to keep them out of an
	// attacker's reach.
	Dir string
	// Name identifies the chain in every checkpoint: "root", or
	// "cluster/<name>". Required.
	Name string
	// Interval is how often the head is read, and a checkpoint signed if it
	// moved. Zero means DefaultInterval.
	Interval time.Duration
	// Keep is how many checkpoint files are kept, the oldest removed first.
	// Zero means DefaultKeep.
	Keep int
	// Logger receives a line per checkpoint and per failure. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports whether c can be used by New.
func (c checkpointerConfig) Validate() error {
	switch {
	case c.Head == nil:
		return errors.New("checkpoint: no head reader")
	case c.Signer == nil:
		return errors.New("checkpoint: no signer")
	case c.Dir == "":
		return errors.New("checkpoint: no directory")
	case c.Name == "":
		return errors.New("checkpoint: no chain name")
	case c.Interval < 0:
		return fmt.Errorf("checkpoint: negative interval %v", c.Interval)
	case c.Keep < 0:
		return fmt.Errorf("checkpoint: negative keep %d", c.Keep)
	}
	return nil
}

// checkpointer signs a checkpoint whenever the chain's head has moved, at
// most once per Interval, and once more when it stops. It is not safe for
// concurrent use: one goroutine calls Run.
type checkpointer struct {
	cfg  checkpointerConfig
	log  *slog.Logger
	last store.ChainHead
}

// newCheckpointer checks cfg, creates cfg.Dir and writes the signer's public key there.
// It also reads LatestFile, so that a restart does not sign the same head
// again.
func newCheckpointer(cfg checkpointerConfig) (*checkpointer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.Keep == 0 {
		cfg.Keep = defaultKeep
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pub, err := EncodePublicKey(cfg.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if err := renameio.WriteFile(filepath.Join(cfg.Dir, PublicKeyFile), pub, 0o644); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	c := &checkpointer{cfg: cfg, log: cfg.Logger}
	// A missing or foreign latest checkpoint only means the next one is
	// signed at once.
	if cp, err := ReadFile(filepath.Join(cfg.Dir, LatestFile), cfg.Signer.Public()); err == nil && cp.Name == cfg.Name {
		c.last = cp.Head
	}
	return c, nil
}

// Run checkpoints at once if the head moved, then every Interval, until ctx
// is done; then it signs a final checkpoint if the head moved and returns
// that checkpoint's error. Failures along the way are logged, not returned:
// a store outage must not stop the component. The store must stay open
// until Run returns.
func (c *checkpointer) Run(ctx context.Context) error {
	c.tryCheckpoint(ctx)
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_, err := c.Checkpoint(fctx)
			return err
		case <-t.C:
			c.tryCheckpoint(ctx)
		}
	}
}

func (c *checkpointer) tryCheckpoint(ctx context.Context) {
	if _, err := c.Checkpoint(ctx); err != nil && ctx.Err() == nil {
		c.log.Error("audit checkpoint failed", "chain", c.cfg.Name, "error", err)
	}
}

// decision is what to do with a head, given the last checkpoint's.
type decision int

const (
	skip      decision = iota // the head has not moved
	sign                      // the head moved forward
	regressed                 // the head moved back or changed in place
)

// decide compares the head read now with the last checkpointed head. A head
// behind the last checkpoint, or at its seq with another hash, means the
// chain lost its tail or was rewritten: it is never signed, since a
// checkpoint of it would launder the rewrite.
func decide(last, head store.ChainHead) decision {
	switch {
	case head.Seq == 0 && last.Seq == 0:
		return skip
	case head.Seq < last.Seq:
		return regressed
	case head.Seq == last.Seq && bytes.Equal(head.Hash, last.Hash):
		return skip
	case head.Seq == last.Seq:
		return regressed
	}
	return sign
}

// Checkpoint reads the head and, if it moved since the last checkpoint,
// signs a checkpoint, writes it (a new file and LatestFile) and logs it. It
// returns the path written, or "" if the head had not moved. A head that
// moved back is reported as an error and not signed.
func (c *checkpointer) Checkpoint(ctx context.Context) (string, error) {
	head, err := c.cfg.Head.AuditHead(ctx)
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	switch decide(c.last, head) {
	case skip:
		return "", nil
	case regressed:
		return "", fmt.Errorf("checkpoint: the audit chain head (seq %d, hash %x) is not after the last checkpoint (seq %d, hash %x): "+
			"the chain lost events or was rewritten", head.Seq, head.Hash, c.last.Seq, c.last.Hash)
	}
	if err := c.checkLast(ctx); err != nil {
		return "", err
	}
	now := time.Now().UTC()
	data, err := Sign(c.cfg.Signer, Checkpoint{Name: c.cfg.Name, Head: head, Time: now})
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	path := filepath.Join(c.cfg.Dir, fmt.Sprintf("%020d-%s.json", head.Seq, now.Format("20060102T150405Z")))
	if err := renameio.WriteFile(path, data, 0o644); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := renameio.WriteFile(filepath.Join(c.cfg.Dir, LatestFile), data, 0o644); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	c.last = head
	c.log.Info("audit checkpoint", "chain", c.cfg.Name, "seq", head.Seq, "hash", hex.EncodeToString(head.Hash), "file", path)
	if err := c.prune(); err != nil {
		c.log.Warn("removing old audit checkpoints failed", "dir", c.cfg.Dir, "error", err)
	}
	return path, nil
}

// checkLast makes sure the chain still passes through the last checkpoint
// before a later head is signed, so that a chain rewritten from an earlier
// event, or cut short and then grown past it, is reported instead of
// signed.
func (c *checkpointer) checkLast(ctx context.Context) error {
	if c.last.Seq == 0 {
		return nil
	}
	h, err := c.cfg.Head.AuditHashAt(ctx, c.last.Seq)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("checkpoint: the audit chain has no event at the last checkpoint's seq %d: "+
			"the chain lost events or was rewritten", c.last.Seq)
	case err != nil:
		return fmt.Errorf("checkpoint: %w", err)
	case !bytes.Equal(h, c.last.Hash):
		return fmt.Errorf("checkpoint: the event at the last checkpoint's seq %d has hash %x, not %x: "+
			"the chain was rewritten", c.last.Seq, h, c.last.Hash)
	}
	return nil
}

// prune removes the oldest checkpoint files beyond Keep.
func (c *checkpointer) prune() error {
	entries, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && fileName.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	if len(names) <= c.cfg.Keep {
		return nil
	}
	slices.Sort(names)
	var errs []error
	for _, n := range names[:len(names)-c.cfg.Keep] {
		errs = append(errs, os.Remove(filepath.Join(c.cfg.Dir, n)))
	}
	return errors.Join(errs...)
}
