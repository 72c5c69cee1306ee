package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/ca/root/federation"
)

func newRootCACommand() *cobra.Command {
	cmd := &cobra.Command{Use: "root", Short: "Central root CA commands"}
	var configPath string
	serve := &cobra.Command{
		Use:   "serve --config root.yaml",
		Short: "Serve the central root CA: issuer enrolment, intermediates, the trust bundle",
		Long: `meshca root serve runs the central root CA. Its key is a Vault Transit key (key.kind
vault) or a file in DATA_DIR (key.kind file). Cluster issuers enrol with a one-time join
token from "meshca admin cluster add", then renew their name-constrained intermediates
with the credential they received. The trust bundle (roots, and federated bundles) is
published to issuers, which relay it to agents, and written to DATA_DIR/bundle.pem and
DATA_DIR/bundle.spiffe.json. Admin commands reach it on DATA_DIR/admin.sock.
See deploy/examples/root.yaml and deploy/examples/root-vault.yaml.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return errors.New("--config is required")
			}
			cfg := defaultRootConfig()
			if err := loadConfig(configPath, &cfg); err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return fmt.Errorf("config %s: %w", configPath, err)
			}
			if err := reloadRoot(cmd, configPath, cfg); err != nil {
				return err
			}
			return runRoot(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	serve.Flags().StringVar(&configPath, "config", "", "YAML config file (required; see deploy/examples/root.yaml)")
	cmd.AddCommand(serve)
	return cmd
}

// runRoot wires a validated root config and serves until ctx is done.
func runRoot(ctx context.Context, cfg rootConfig, out io.Writer) error {
	sc, err := rootStack(cfg)
	if err != nil {
		return err
	}
	sc.Serving = func(addr, adminSocket string) {
		fmt.Fprintf(out, "meshca root is serving on %s (TLS); admin socket %s; bundle %s\n", addr, adminSocket,
			filepath.Join(cfg.DataDir, "bundle.pem"))
	}
	return root.RunStack(ctx, sc)
}

// rootStack maps a validated root config to the root stack's; the caller
// sets Serving.
func rootStack(cfg rootConfig) (root.StackConfig, error) {
	var trustDomains []string
	if cfg.Federation.TrustDomain != "" {
		trustDomains = append(trustDomains, cfg.Federation.TrustDomain)
	}
	sc := root.StackConfig{
		Root: root.Config{
			Keys: cfg.keys(), Hosts: cfg.Hosts, IssuerServingNames: cfg.IssuerServingNames, TrustDomains: trustDomains,
			RootTTL: time.Duration(cfg.RootTTL), IntermediateTTL: time.Duration(cfg.IntermediateTTL),
			CredentialTTL: time.Duration(cfg.CredentialTTL), PropagationDelay: time.Duration(cfg.Rotation.PropagationDelay),
			AutoRotate: cfg.autoRotate(), Limits: cfg.Limits.grpclimit(), Adopt: cfg.AdoptRoot.config(),
		},
		DataDir: cfg.DataDir, OpenStore: rootStoreOpener(cfg.Store, cfg.DataDir), Checkpoint: cfg.Store.Checkpoint.dirConfig(cfg.DataDir),
		Listen: cfg.Listen, AdminSocket: cfg.AdminSocketAllow.unixConfig(cfg.AdminSocket),
		AdminTLSListen: cfg.Admin.Listen, Admins: adminIDs(cfg.Admin),
		FederationRefresh: time.Duration(cfg.Federation.RefreshInterval), MetricsListen: cfg.MetricsListen,
		Upstream: cfg.Upstream.config(),
	}
	f := cfg.Federation
	var err error
	if f.TrustDomain != "" {
		if sc.BundleTrustDomain, err = spiffeid.TrustDomainFromString(f.TrustDomain); err != nil {
			return root.StackConfig{}, fmt.Errorf("federation.trustDomain %q: %w", f.TrustDomain, err)
		}
	}
	if f.Listen != "" {
		sc.Endpoint = &root.Endpoint{
			Listen: f.Listen, TrustDomain: sc.BundleTrustDomain, Profile: federation.Profile(f.profile()), CertFile: f.CertFile, KeyFile: f.KeyFile,
			OIDCIssuer: f.OIDC.IssuerURL,
		}
	}
	for _, r := range f.FederatesWith {
		rf, err := r.files()
		if err != nil {
			return root.StackConfig{}, fmt.Errorf("federation %s: %w", r.TrustDomain, err)
		}
		sc.Federation = append(sc.Federation, rf)
	}
	return sc, nil
}

// rootStoreOpener opens the store cfg selects, for the root stack.
func rootStoreOpener(cfg storeConfig, dataDir string) func(context.Context) (root.StackStore, error) {
	return func(ctx context.Context) (root.StackStore, error) {
		db, err := openBackend(ctx, cfg, dataDir)
		if err != nil {
			return nil, err // not a nil backend in the interface
		}
		return db, nil
	}
}
