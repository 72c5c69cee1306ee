package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
	"github.com/meshca/meshca/issuer/stack"
)

func newIssuerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "issuer",
		Short: "Cluster issuer commands",
	}
	cmd.AddCommand(newIssuerServeCommand(), newIssuerInitRootCommand())
	return cmd
}

func newIssuerServeCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "serve --config issuer.yaml",
		Short: "Serve the Istio CA API for one or more Kubernetes clusters",
		Long: `meshca issuer serve runs a cluster issuer: it attests each caller's projected
service-account token with the attestor configured for the cluster named by the gRPC
metadata "clusterid" (tokenreview, jwks or dev), signs certificates with an intermediate
minted at start under the root key, and records them in the store. It writes
DATA_DIR/bundle.pem, the root certificate clients must trust. See deploy/examples/issuer.yaml.
SIGHUP re-reads --config: logLevel and clusters (attestors, caches, policies) take effect
at once; the log names every other changed field, which needs a restart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return errors.New("--config is required")
			}
			cfg, err := loadIssuerConfig(configPath)
			if err != nil {
				return err
			}
			if err := cliconfig.ApplyLogging(cmd, cfg.LogLevel, cfg.LogFormat); err != nil {
				return err
			}
			live := &liveAttestor{}
			reload := issuerReloader(cmd, configPath, cfg, live, slog.Default())
			return runIssuer(cmd.Context(), cfg, cmd.OutOrStdout(), live, reload)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file (required; see deploy/examples/issuer.yaml)")
	return cmd
}

// runIssuer wires a validated config and serves until ctx is done. The
// attestor is built into live, and from then on reload runs at every SIGHUP.
func runIssuer(ctx context.Context, cfg issuerConfig, out io.Writer, live *liveAttestor, reload cliconfig.Reloader[issuerConfig]) error {
	log := slog.Default()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	// client-go logs through klog; keep one structured log stream.
	klog.SetSlogLogger(log.With("component", "client-go"))
	sc, err := issuerStack(cfg)
	if err != nil {
		return err
	}
	sc.Attestor = func() (attest.Attestor, error) {
		a, err := buildAttestor(cfg, log)
		if err != nil {
			return nil, err
		}
		live.set(a)
		go reload.Run(rctx, cfg)
		return live, nil
	}
	sc.Serving = func(addr, bundlePath string) {
		fmt.Fprintf(out, "meshca issuer is serving the Istio CA API on %s (TLS; root: %s)\n", addr, bundlePath)
	}
	setIssuerGC()
	return stack.Run(ctx, sc)
}

// buildAttestor builds, per cluster, policy → cache → attestor, and routes
// between clusters by clusterid.
func buildAttestor(cfg issuerConfig, log *slog.Logger) (attest.Attestor, error) {
	mc := attest.MultiClusterConfig{Local: cfg.Cluster, Clusters: map[string]attest.Attestor{}, Aliases: map[string]string{}}
	for i := range cfg.Clusters {
		cl := &cfg.Clusters[i]
		a, err := clusterAttestor(cl, cfg.DataDir, log)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
		}
		if !cl.Cache.Disabled {
			a = attest.NewCached(a, attest.CacheConfig{Size: cl.Cache.Size, TTL: cl.cacheTTL()})
		}
		if !cl.Policy.IsZero() {
			if a, err = attest.NewPolicy(a, cl.Policy); err != nil {
				return nil, fmt.Errorf("cluster %q: %w", cl.Name, err)
			}
		}
		mc.Clusters[cl.Name] = a
		for _, alias := range cl.Aliases {
			mc.Aliases[alias] = cl.Name
		}
		log.Info("cluster attestor", "cluster", cl.Name, "attestor", cl.attestor(), "aliases", cl.Aliases,
			"pod_binding_required", cl.attestor() == attestorTokenReview && !cl.AllowUnboundTokens,
			"cache_ttl", cl.cacheTTL().String(), "cache_disabled", cl.Cache.Disabled)
	}
	return attest.NewMultiCluster(mc)
}

// clusterAttestor builds the bare attestor of one cluster. Nothing here
// contacts the API server: an issuer starts even while a cluster is away,
// and its requests fail with Unavailable until it returns.
func clusterAttestor(cl *clusterConfig, dataDir string, log *slog.Logger) (attest.Attestor, error) {
	if cl.attestor() == attestorDev {
		dir := cl.DevKeyDir
		if dir == "" {
			dir = dataDir
		}
		signer, err := attest.LoadOrCreateDevSigner(dir)
		if err != nil {
			return nil, err
		}
		log.Warn("dev attestor: tokens signed by a local dev key are trusted; never use this in production", "cluster", cl.Name)
		return attest.NewJWKS(attest.JWKSConfig{
			Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: signer.KeySet()}, Audiences: cl.Audiences, Cluster: cl.Name,
		})
	}
	client, err := attest.NewKubeClient(attest.KubeClientConfig{Kubeconfig: cl.Kubeconfig, Context: cl.Context})
	if err != nil {
		return nil, err
	}
	if cl.attestor() == attestorJWKS {
		keys, err := attest.NewRemoteKeys(attest.RemoteKeysConfig{
			Client: client, RefreshInterval: time.Duration(cl.JWKS.RefreshInterval), MaxStale: time.Duration(cl.JWKS.MaxStale),
			Timeout: time.Duration(cl.APITimeout), Logger: log.With("cluster", cl.Name),
		})
		if err != nil {
			return nil, err
		}
		return attest.NewJWKS(attest.JWKSConfig{Issuer: cl.JWKS.Issuer, Keys: keys, Audiences: cl.Audiences, Cluster: cl.Name})
	}
	return attest.NewTokenReview(attest.TokenReviewConfig{
		Client: client, Cluster: cl.Name, Audiences: cl.Audiences,
		AllowUnboundTokens: cl.AllowUnboundTokens, Timeout: time.Duration(cl.APITimeout),
	})
}
