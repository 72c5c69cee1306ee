package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/issuer/stack"
)

func newDevCommand() *cobra.Command {
	cfg := defaultDevConfig()
	var (
		configPath string
		extraHosts []string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a complete development CA in one process (root, issuer, SQLite, dev tokens)",
		Long: `meshca dev runs a root CA (key file), one cluster issuer (cluster "dev", trust domain
cluster.local) serving the Istio CA API over TLS, an SQLite store and a dev token signer,
all kept in --data-dir. Restarting on the same data dir keeps the same root. It writes
DATA_DIR/bundle.pem, the root certificate clients must trust.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath != "" {
				fileCfg := defaultDevConfig()
				if err := loadConfig(configPath, &fileCfg); err != nil {
					return err
				}
				applyChangedFlags(cmd, &fileCfg, cfg)
				cfg = fileCfg
			}
			cfg.Hosts = addHosts(cfg.Hosts, extraHosts)
			if err := reloadDev(cmd, configPath, cfg); err != nil {
				return err
			}
			return runDev(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config file (flags given explicitly override it)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the root key, dev token key, database and bundle.pem")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to serve the Istio CA API on (TLS)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "address to serve /metrics, /healthz and /readyz on (plain HTTP; default none)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "trust domain of issued SPIFFE IDs")
	f.StringSliceVar(&extraHosts, "host", nil, "DNS name or IP to add to the serving certificate's names (repeatable; added to the defaults, or to the config file's hosts)")
	f.StringVar(&cfg.Store.DSN, "store-dsn", cfg.Store.DSN, "database: a postgres:// URL, or an SQLite file path (default DATA_DIR/meshca.db)")
	cmd.AddCommand(newDevTokenCommand())
	return cmd
}

// applyChangedFlags copies the flags the user set explicitly from flagCfg
// into fileCfg, so that flags override the config file.
func applyChangedFlags(cmd *cobra.Command, fileCfg *devConfig, flagCfg devConfig) {
	changed := cmd.Flags().Changed
	if changed("data-dir") {
		fileCfg.DataDir = flagCfg.DataDir
	}
	if changed("listen") {
		fileCfg.Listen = flagCfg.Listen
	}
	if changed("metrics-listen") {
		fileCfg.MetricsListen = flagCfg.MetricsListen
	}
	if changed("trust-domain") {
		fileCfg.TrustDomain = flagCfg.TrustDomain
	}
	if changed("store-dsn") {
		// The driver follows the DSN given on the command line.
		fileCfg.Store.DSN, fileCfg.Store.Driver = flagCfg.Store.DSN, ""
	}
}

// addHosts returns hosts followed by those of extra it does not already
// hold. --host adds to the serving names rather than replacing them, so the
// loopback names the printed next steps dial keep working.
func addHosts(hosts, extra []string) []string {
	out := slices.Clone(hosts)
	for _, h := range extra {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func runDev(ctx context.Context, cfg devConfig, out io.Writer) error {
	sc, err := devStack(cfg)
	if err != nil {
		return err
	}
	sc.Attestor = func() (attest.Attestor, error) {
		signer, err := attest.LoadOrCreateDevSigner(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		jwks, err := attest.NewJWKS(attest.JWKSConfig{Issuer: attest.DevIssuer, Keys: attest.StaticKeys{Set: signer.KeySet()}, Cluster: cfg.Cluster})
		if err != nil {
			return nil, err
		}
		// Routed like an issuer's clusters, so that istio-agent's default
		// cluster ID (attest.IstioDefaultClusterID) means this cluster.
		return attest.NewMultiCluster(attest.MultiClusterConfig{
			Clusters: map[string]attest.Attestor{cfg.Cluster: attest.NewCached(jwks, attest.CacheConfig{})}, Local: cfg.Cluster,
		})
	}
	sc.Serving = func(addr, bundlePath string) { printDevBanner(out, addr, cfg.DataDir, bundlePath, cfg.Hosts) }
	sc.MetricsServing = func(addr string) {
		fmt.Fprintf(out, "meshca dev serves /metrics, /healthz and /readyz on http://%s\n", addr)
	}
	setIssuerGC()
	return stack.Run(ctx, sc)
}

func printDevBanner(out io.Writer, addr, dataDir, bundlePath string, hosts []string) {
	issuerAddr, serverName := fetchTarget(addr, hosts)
	fetchFlags := "--issuer " + issuerAddr
	if serverName != "" {
		fetchFlags += " --server-name " + serverName
	}
	fmt.Fprintf(out, `meshca dev is serving the Istio CA API on %s (TLS; root: %s)

Next, in another terminal:
  meshca dev token --data-dir %s --namespace default --service-account web > token.jwt
  meshca cert fetch %s --ca-bundle %s --token-file token.jwt --out ./certs

Stop with Ctrl-C.
`, addr, bundlePath, dataDir, fetchFlags, bundlePath)
}

// fetchTarget is the address the printed `meshca cert fetch` dials and the
// server name it checks (empty: the address's host), chosen so that the
// serving certificate, whose names are hosts, passes: the listen address
// when hosts name its host; for a wildcard listen address, a loopback name
// in hosts; else the listen address with the first of hosts as server name.
func fetchTarget(addr string, hosts []string) (issuerAddr, serverName string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || len(hosts) == 0 || slices.Contains(hosts, host) {
		return addr, ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		for _, h := range []string{"127.0.0.1", "::1", "localhost"} {
			if slices.Contains(hosts, h) {
				return net.JoinHostPort(h, port), ""
			}
		}
	}
	return addr, hosts[0]
}
