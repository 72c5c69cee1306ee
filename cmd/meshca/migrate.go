package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/sqlite"
)

func newMigrateCommand() *cobra.Command {
	var dsn, dataDir, grantTo string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the database schema migrations embedded in this binary",
		Long: `meshca migrate brings the database schema up to the version this binary needs,
as every meshca component does when it starts. Run it on its own to migrate before a
rollout. On PostgreSQL it holds an advisory lock while it works, so it is safe to run
while replicas start; running it again changes nothing.

On PostgreSQL, run it as a migration role that owns the tables, with --grant-to naming
the role meshca runs as: that role then gets what a running meshca needs, but only
SELECT and INSERT on the audit log, and, not owning the tables, cannot disable the
audit log's triggers. Run it again after each upgrade (it grants on the tables that
exist). A superuser, or a member of the owning role, is refused as runtime role.`,
		Example: `  meshca migrate --store-dsn 'postgres://meshca@db.example:5432/meshca?sslmode=verify-full'
  meshca migrate --store-dsn 'postgres://meshca_owner@db.example:5432/meshca' --grant-to meshca_runtime
  meshca migrate --data-dir ./.meshca-dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := storeTarget(dsn, dataDir)
			if err != nil {
				return err
			}
			if grantTo != "" && cfg.driver() != "postgres" {
				return errors.New("--grant-to needs a PostgreSQL store")
			}
			if err := runMigrate(cmd.Context(), cfg, cmd.OutOrStdout()); err != nil || grantTo == "" {
				return err
			}
			if err := postgres.GrantRuntime(cmd.Context(), cfg.DSN, grantTo); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "granted runtime role %s (audit log: SELECT, INSERT only)\n", grantTo)
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "store-dsn", "", "PostgreSQL URL (postgres://...) or SQLite file path")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory of an SQLite store (DIR/meshca.db)")
	cmd.Flags().StringVar(&grantTo, "grant-to", "", "PostgreSQL role meshca runs as: grant it what it needs, audit log append-only")
	return cmd
}

func runMigrate(ctx context.Context, cfg storeConfig, out io.Writer) error {
	if cfg.driver() == "sqlite" {
		s, err := sqlite.Open(ctx, sqlite.Config{Path: cfg.DSN})
		if err != nil {
			return err
		}
		if err := s.Close(); err != nil {
			return err
		}
		fmt.Fprintf(out, "sqlite schema at %s is current\n", cfg.DSN)
		return nil
	}
	r, err := postgres.Migrate(ctx, cfg.DSN)
	if err != nil {
		return err
	}
	if len(r.Applied) == 0 {
		fmt.Fprintf(out, "postgres schema is current (version %d)\n", r.Version)
		return nil
	}
	fmt.Fprintf(out, "postgres schema migrated to version %d (applied %v)\n", r.Version, r.Applied)
	return nil
}
