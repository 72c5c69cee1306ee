package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// newIssuerInitRootCommand is `meshca issuer init-root`: the root CA that
// standalone issuer replicas share (root.dir), made once before they start
// so that it can be handed to all of them, e.g. as one Kubernetes Secret.
func newIssuerInitRootCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "init-root --dir DIR",
		Short: "Create (or show) the root CA of standalone issuers in DIR",
		Long: `meshca issuer init-root creates root-key.pem (mode 0600) and root.pem in DIR, the files
root.dir names in the issuer config, and prints the root's SHA-256 fingerprint. An existing root
in DIR is kept and shown, never replaced. Replicas of a standalone issuer on one store must share
this root: for Kubernetes, put both files in one Secret (the Helm chart's issuer.rootCA).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			return initRoot(cmd.OutOrStdout(), dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for root-key.pem and root.pem (required)")
	return cmd
}

func initRoot(out io.Writer, dir string) error {
	root, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir})
	if err != nil {
		return err
	}
	sum := trust.Fingerprint(root.Certificate)
	fmt.Fprintf(out, "root %s\nexpires %s\nsha256 %s\nfiles %s, %s\n", root.Certificate.Subject.CommonName,
		root.Certificate.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), hex.EncodeToString(sum[:]),
		filepath.Join(dir, ca.RootKeyFile), filepath.Join(dir, ca.RootCertFile))
	return nil
}
