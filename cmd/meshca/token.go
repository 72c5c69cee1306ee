package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/attest"
)

func newDevTokenCommand() *cobra.Command {
	var (
		dataDir string
		spec    attest.TokenSpec
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a service-account token signed by the dev token signer",
		Long: `Prints a JWT shaped like a Kubernetes projected service-account token, signed by
the dev token key in --data-dir, which meshca dev trusts (it creates the key at its
first start; this command never does). For development only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Only the key the running server trusts is any use: never
			// make a new one here.
			signer, err := attest.LoadDevSigner(dataDir)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no dev signer at %s (is meshca dev running there? set --data-dir)", dataDir)
			}
			if err != nil {
				return err
			}
			tok, err := signer.Mint(spec)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", defaultDevConfig().DataDir, "meshca dev data directory")
	f.StringVar(&spec.Namespace, "namespace", "", "Kubernetes namespace (required)")
	f.StringVar(&spec.ServiceAccount, "service-account", "", "service account (required)")
	f.StringSliceVar(&spec.Audiences, "audience", []string{"meshca"}, "token audience (repeatable)")
	f.DurationVar(&spec.TTL, "ttl", time.Hour, "token lifetime")
	f.StringVar(&spec.PodName, "pod-name", "", "bind the token to this pod name (with --pod-uid)")
	f.StringVar(&spec.PodUID, "pod-uid", "", "bind the token to this pod UID (with --pod-name)")
	_ = cmd.MarkFlagRequired("namespace")
	_ = cmd.MarkFlagRequired("service-account")
	return cmd
}
