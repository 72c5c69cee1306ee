package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/sqlite"
)

func newAuditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Inspect the audit log",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAuditVerifyCommand())
	return cmd
}

func newAuditVerifyCommand() *cobra.Command {
	var dsn, dataDir, keyFile string
	var checkpoints []string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Walk the whole audit hash chain and report the first broken link",
		Long: `meshca audit verify reads the database directly (read-only: no migrations, no
writes) and checks every audit event in sequence order: consecutive sequence numbers,
each event's prev_hash equal to the hash of the event before it, and each hash equal to
SHA-256(prev_hash || canonical encoding of the event). On PostgreSQL it also checks that
the chain ends at the head recorded with it, which shows deleted trailing events.

A chain can still be cut short, or rewritten from some event onwards with fresh hashes,
by whoever can write the database. With --checkpoint, the chain must also pass through
the seq and hash of that signed checkpoint (written by the issuer and the root to
DATA_DIR/audit-checkpoints/): the command fails if the checkpoint's signature does not
verify, if the chain has no event at its seq (a cut-off tail), or if the event there has
another hash (a rewrite). Verify against a checkpoint and a public key kept away from the
database host: by default the key is checkpoint-key.pub.pem next to the checkpoint file;
--checkpoint-key pins it.

It exits 0 if the chain verifies and non-zero otherwise, naming the sequence number of
the first broken link.`,
		Example: `  meshca audit verify --store-dsn 'postgres://meshca@db.example:5432/meshca'
  meshca audit verify --data-dir ./.meshca-dev
  meshca audit verify --data-dir ./.meshca-dev --checkpoint ./.meshca-dev/audit-checkpoints/latest.json
  meshca audit verify --store-dsn 'postgres://...' --checkpoint /archive/east/latest.json --checkpoint-key /archive/east/key.pub.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := storeTarget(dsn, dataDir)
			if err != nil {
				return err
			}
			anchors, err := readCheckpoints(checkpoints, keyFile, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			return runAuditVerify(cmd.Context(), cfg, cmd.OutOrStdout(), anchors...)
		},
	}
	cmd.Flags().StringVar(&dsn, "store-dsn", "", "PostgreSQL URL (postgres://...) or SQLite file path")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory of an SQLite store (DIR/meshca.db)")
	cmd.Flags().StringArrayVar(&checkpoints, "checkpoint", nil, "signed audit checkpoint the chain must reach (repeatable)")
	cmd.Flags().StringVar(&keyFile, "checkpoint-key", "", "PEM public key of the checkpoints (default: "+checkpoint.PublicKeyFile+" next to each checkpoint)")
	return cmd
}

// readCheckpoints verifies the signature of each checkpoint file and returns
// their heads.
func readCheckpoints(paths []string, keyFile string, out io.Writer) ([]store.ChainHead, error) {
	var heads []store.ChainHead
	for _, p := range paths {
		kf := cmp.Or(keyFile, filepath.Join(filepath.Dir(p), checkpoint.PublicKeyFile))
		pub, err := checkpoint.ReadPublicKey(kf)
		if err != nil {
			return nil, fmt.Errorf("checkpoint key: %w", err)
		}
		cp, err := checkpoint.ReadFile(p, pub)
		if err != nil {
			return nil, fmt.Errorf("checkpoint refused: %w", err)
		}
		fmt.Fprintf(out, "checkpoint %s: chain %q seq %d hash %x at %s, signature valid (key %s)\n",
			p, cp.Name, cp.Head.Seq, cp.Head.Hash, cp.Time.Format(time.RFC3339), cp.KeyID)
		heads = append(heads, cp.Head)
	}
	return heads, nil
}

func runAuditVerify(ctx context.Context, cfg storeConfig, out io.Writer, anchors ...store.ChainHead) error {
	var head store.ChainHead
	var err error
	if cfg.driver() == "postgres" {
		head, err = postgres.VerifyAuditLog(ctx, cfg.DSN, anchors...)
	} else {
		head, err = sqlite.VerifyAuditLog(ctx, cfg.DSN, anchors...)
	}
	var broken *store.BrokenLinkError
	if errors.As(err, &broken) {
		fmt.Fprintf(out, "audit chain BROKEN at seq %d: %s\n", broken.Seq, broken.Reason)
		return broken
	}
	var anchor *store.AnchorError
	if errors.As(err, &anchor) {
		fmt.Fprintf(out, "audit chain DOES NOT REACH the checkpoint at seq %d: %s\n", anchor.Anchor.Seq, anchor.Reason)
		return anchor
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "audit chain verified: %d events, head seq %d hash %x\n", head.Seq, head.Seq, head.Hash)
	if len(anchors) > 0 {
		fmt.Fprintf(out, "audit chain reaches %d checkpoint(s)\n", len(anchors))
	}
	return nil
}
