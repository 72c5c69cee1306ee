package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/store"
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
	var dsn, dataDir string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Walk the whole audit hash chain and report the first broken link",
		Long: `meshca audit verify reads the database directly (read-only: no migrations, no
writes) and checks every audit event in sequence order: consecutive sequence numbers,
each event's prev_hash equal to the hash of the event before it, and each hash equal to
SHA-256(prev_hash || canonical encoding of the event). On PostgreSQL it also checks that
the chain ends at the head recorded with it, which shows deleted trailing events.

It exits 0 if the chain verifies and non-zero otherwise, naming the sequence number of
the first broken link.`,
		Example: `  meshca audit verify --store-dsn 'postgres://meshca@db.example:5432/meshca'
  meshca audit verify --data-dir ./.meshca-dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := storeTarget(dsn, dataDir)
			if err != nil {
				return err
			}
			return runAuditVerify(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&dsn, "store-dsn", "", "PostgreSQL URL (postgres://...) or SQLite file path")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory of an SQLite store (DIR/meshca.db)")
	return cmd
}

func runAuditVerify(ctx context.Context, cfg storeConfig, out io.Writer) error {
	var head store.ChainHead
	var err error
	if cfg.driver() == "postgres" {
		head, err = postgres.VerifyAuditLog(ctx, cfg.DSN)
	} else {
		head, err = sqlite.VerifyAuditLog(ctx, cfg.DSN)
	}
	var broken *store.BrokenLinkError
	if errors.As(err, &broken) {
		fmt.Fprintf(out, "audit chain BROKEN at seq %d: %s\n", broken.Seq, broken.Reason)
		return broken
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "audit chain verified: %d events, head seq %d hash %x\n", head.Seq, head.Seq, head.Hash)
	return nil
}
