// Package agentcmd is the `agent` command, shared by `meshca agent` and the
// agent-only binary `meshca-agent` (cmd/meshca-agent), which leaves out
// everything else and so stays small in memory.
package agentcmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/agent"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
)

// agentConfig is the YAML configuration of `meshca agent`. Flags override
// the file; the zero value of each field means its default.
type agentConfig struct {
	// Issuer is the issuer's host:port. Required.
	Issuer string `json:"issuer,omitempty"`
	// ServerName overrides the issuer's TLS server name. Default: the host
	// of Issuer.
	ServerName string `json:"serverName,omitempty"`
	// CABundle is the PEM file of trusted roots, re-read at each renewal.
	// Required.
	CABundle string `json:"caBundle,omitempty"`
	// TokenFile holds the service-account token, re-read at each renewal.
	// Required.
	TokenFile string `json:"tokenFile,omitempty"`
	// ClusterID is sent to the issuer. Default: the issuer's own cluster.
	ClusterID string `json:"clusterID,omitempty"`
	// SPIFFEID is the identity the certificates must carry. Default: that
	// of the first certificate obtained.
	SPIFFEID string `json:"spiffeID,omitempty"`
	// IssuerCluster is the cluster whose issuer the agent requires (named
	// in the issuer's intermediate, checked before the token is sent).
	// Default: ClusterID; when both are empty, any cluster's issuer.
	IssuerCluster string `json:"issuerCluster,omitempty"`
	// DNSNames are asked for as DNS SANs in every CSR (istiod's serving
	// names); the issuer grants them only to identities its dnsGrants
	// name. Default: none.
	DNSNames []string `json:"dnsNames,omitempty"`
	// KeyType is ec-p256 (default) or rsa-2048.
	KeyType string `json:"keyType,omitempty"`
	// TTL is the requested certificate lifetime. Default: the issuer's.
	TTL cliconfig.Duration `json:"ttl,omitempty"`
	// SDSSocket is the Envoy SDS Unix socket (mode 0600). Default: none.
	SDSSocket string `json:"sdsSocket,omitempty"`
	// WorkloadSocket is the SPIFFE Workload API Unix socket. Default: none.
	WorkloadSocket string `json:"workloadSocket,omitempty"`
	// WorkloadSocketMode is that socket's file mode, in octal. Default
	// 0600, or 0660 with WorkloadSocketGroup.
	WorkloadSocketMode string `json:"workloadSocketMode,omitempty"`
	// WorkloadSocketGroup is the numeric gid given to that socket. Default:
	// the agent's group.
	WorkloadSocketGroup string `json:"workloadSocketGroup,omitempty"`
	// WorkloadAllowedUIDs and WorkloadAllowedGIDs (comma-separated numeric
	// ids) restrict the Workload API socket to processes with one of those
	// uids or primary gids (SO_PEERCRED). Default: no check beyond the mode.
	WorkloadAllowedUIDs string `json:"workloadAllowedUIDs,omitempty"`
	WorkloadAllowedGIDs string `json:"workloadAllowedGIDs,omitempty"`
	// SDSAllowedUIDs and SDSAllowedGIDs do the same for the SDS socket.
	SDSAllowedUIDs string `json:"sdsAllowedUIDs,omitempty"`
	SDSAllowedGIDs string `json:"sdsAllowedGIDs,omitempty"`
	// MaxConnections, MaxStreamsPerConnection and MaxStreams bound each
	// socket's clients. Defaults 32, 256 and 1024.
	MaxConnections          int `json:"maxConnections,omitempty"`
	MaxStreamsPerConnection int `json:"maxStreamsPerConnection,omitempty"`
	MaxStreams              int `json:"maxStreams,omitempty"`
	// OutDir receives cert.pem, key.pem and bundle.pem. Default: no files.
	OutDir string `json:"outDir,omitempty"`
	// HealthAddr serves /healthz, /readyz and /metrics; "" disables them.
	// Default 127.0.0.1:8089.
	HealthAddr string `json:"healthAddr,omitempty"`
	// ShutdownTimeout bounds a graceful stop. Default 5s.
	ShutdownTimeout cliconfig.Duration `json:"shutdownTimeout,omitempty"`
	// LogLevel is debug, info, warn or error; --log-level overrides it.
	// Default info. SIGHUP reloads it.
	LogLevel string `json:"logLevel,omitempty"`
	// LogFormat is json or text; --log-format overrides it. Read at start.
	LogFormat string `json:"logFormat,omitempty"`
}

func defaultAgentConfig() agentConfig {
	return agentConfig{KeyType: agent.KeyECP256, HealthAddr: "127.0.0.1:8089"}
}

// agentFlags maps each flag to the config field it sets, so that flags given
// explicitly override the file.
var agentFlags = []struct {
	name, usage string
	field       func(*agentConfig) *string
}{
	{"issuer", "issuer address host:port (required)", func(c *agentConfig) *string { return &c.Issuer }},
	{"ca-bundle", "PEM file of trusted root certificates, re-read at each renewal (required)", func(c *agentConfig) *string { return &c.CABundle }},
	{"token-file", "service-account token file, re-read at each renewal (required)", func(c *agentConfig) *string { return &c.TokenFile }},
	{"cluster-id", "cluster id sent to the issuer (empty: the issuer's local cluster)", func(c *agentConfig) *string { return &c.ClusterID }},
	{"issuer-cluster", "cluster whose issuer is required, checked at the TLS handshake (default: --cluster-id; empty: any cluster's issuer)", func(c *agentConfig) *string { return &c.IssuerCluster }},
	{"sds-socket", "Unix socket to serve Envoy SDS v3 on (mode 0600; empty: no SDS)", func(c *agentConfig) *string { return &c.SDSSocket }},
	{"workload-socket", "Unix socket to serve the SPIFFE Workload API on (empty: none)", func(c *agentConfig) *string { return &c.WorkloadSocket }},
	{"out", "directory to keep cert.pem, key.pem and bundle.pem in (empty: no files)", func(c *agentConfig) *string { return &c.OutDir }},
	{"health-addr", "address of /healthz, /readyz and /metrics (empty: none)", func(c *agentConfig) *string { return &c.HealthAddr }},
	{"key-type", "key type: ec-p256 or rsa-2048", func(c *agentConfig) *string { return &c.KeyType }},
	{"spiffe-id", "SPIFFE ID the certificates must carry (default: that of the first certificate obtained)", func(c *agentConfig) *string { return &c.SPIFFEID }},
	{"server-name", "issuer TLS server name (default: the host of --issuer)", func(c *agentConfig) *string { return &c.ServerName }},
	{"workload-socket-mode", "file mode of the Workload API socket, octal (default 0600, or 0660 with --workload-socket-group)", func(c *agentConfig) *string { return &c.WorkloadSocketMode }},
	{"workload-socket-group", "numeric gid given to the Workload API socket (default: the agent's group)", func(c *agentConfig) *string { return &c.WorkloadSocketGroup }},
	{"workload-allowed-uids", "comma-separated uids allowed on the Workload API socket, checked with SO_PEERCRED (default: no check beyond the file mode)", func(c *agentConfig) *string { return &c.WorkloadAllowedUIDs }},
	{"workload-allowed-gids", "comma-separated primary gids allowed on the Workload API socket, checked with SO_PEERCRED", func(c *agentConfig) *string { return &c.WorkloadAllowedGIDs }},
	{"sds-allowed-uids", "comma-separated uids allowed on the SDS socket, checked with SO_PEERCRED (default: no check beyond mode 0600)", func(c *agentConfig) *string { return &c.SDSAllowedUIDs }},
	{"sds-allowed-gids", "comma-separated primary gids allowed on the SDS socket, checked with SO_PEERCRED", func(c *agentConfig) *string { return &c.SDSAllowedGIDs }},
}

// agentIntFlags are the integer flags, mapped like agentFlags.
var agentIntFlags = []struct {
	name, usage string
	field       func(*agentConfig) *int
}{
	{"max-connections", "connections each socket accepts at once (0: 32)", func(c *agentConfig) *int { return &c.MaxConnections }},
	{"max-streams-per-connection", "concurrent streams per connection (0: 256)", func(c *agentConfig) *int { return &c.MaxStreamsPerConnection }},
	{"max-streams", "streams each socket serves at once; more fail with ResourceExhausted (0: 1024)", func(c *agentConfig) *int { return &c.MaxStreams }},
}

// New returns the `agent` command.
func New() *cobra.Command {
	cfg := defaultAgentConfig()
	var (
		configPath string
		ttl        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Keep a workload certificate renewed and serve it over SDS, the Workload API and files",
		Long: `meshca agent runs next to a workload, like istio-agent or SPIRE's agent. It generates
a private key locally, gets a certificate for it from the issuer with the token in
--token-file, renews it at about half of its lifetime, and serves it to Envoy over SDS v3
(--sds-socket; resources default, ROOTCA, ALL, the SPIFFE ID and the trust domain ID) and
to applications over the SPIFFE Workload API (--workload-socket; X.509- and JWT-SVIDs, the
latter minted by the issuer), and optionally as files (--out). Only the agent's user may use the sockets unless --workload-socket-group or
--workload-socket-mode open the Workload API to others; --*-allowed-uids/gids narrow them
further. /readyz answers 200 only while it holds a valid certificate; /metrics on the same
address exports meshca_agent_crl_rejected_total, meshca_agent_jwt_authority_rejected_total
and meshca_agent_bundle_rejected_total.
SIGTERM or SIGINT stops it gracefully. SIGHUP re-reads --config: logLevel and tokenFile
take effect at once; the log names every other changed field, which needs a restart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.TTL = cliconfig.Duration(ttl)
			load := func() (agentConfig, error) {
				merged, err := mergeAgentConfig(cfg, configPath, cmd.Flags().Changed)
				if err != nil {
					return agentConfig{}, err
				}
				if _, err := merged.agentConfig(slog.Default()); err != nil {
					return agentConfig{}, err
				}
				return merged, nil
			}
			merged, err := load()
			if err != nil {
				return err
			}
			if err := cliconfig.ApplyLogging(cmd, merged.LogLevel, merged.LogFormat); err != nil {
				return err
			}
			acfg, err := merged.agentConfig(slog.Default())
			if err != nil {
				return err
			}
			reload := cliconfig.Reloader[agentConfig]{Cmd: cmd, Path: configPath, Load: load,
				LogLevel: func(c agentConfig) string { return c.LogLevel }, Live: []string{"tokenFile"}}
			return runAgent(cmd.Context(), acfg, merged, reload)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config file (flags given explicitly override it)")
	for _, fl := range agentFlags {
		p := fl.field(&cfg)
		f.StringVar(p, fl.name, *p, fl.usage)
	}
	for _, fl := range agentIntFlags {
		p := fl.field(&cfg)
		f.IntVar(p, fl.name, *p, fl.usage)
	}
	f.DurationVar(&ttl, "ttl", 0, "requested certificate lifetime (0: the issuer's default)")
	f.StringArrayVar(&cfg.DNSNames, "dns-name", nil, "DNS name to ask for in the certificate, e.g. istiod.istio-system.svc (repeatable; the issuer's dnsGrants must grant it to this identity)")
	return cmd
}

// mergeAgentConfig returns flagCfg when there is no config file, else the
// file's configuration with the flags that changed (by name) applied on top.
func mergeAgentConfig(flagCfg agentConfig, configPath string, changed func(string) bool) (agentConfig, error) {
	if configPath == "" {
		return flagCfg, nil
	}
	cfg := defaultAgentConfig()
	if err := cliconfig.Load(configPath, &cfg); err != nil {
		return agentConfig{}, err
	}
	for _, f := range agentFlags {
		if changed(f.name) {
			*f.field(&cfg) = *f.field(&flagCfg)
		}
	}
	for _, f := range agentIntFlags {
		if changed(f.name) {
			*f.field(&cfg) = *f.field(&flagCfg)
		}
	}
	if changed("ttl") {
		cfg.TTL = flagCfg.TTL
	}
	if changed("dns-name") {
		cfg.DNSNames = flagCfg.DNSNames
	}
	return cfg, nil
}

// agentConfig turns the file/flag configuration into the agent's Config.
func (c agentConfig) agentConfig(log *slog.Logger) (agent.Config, error) {
	cfg := agent.Config{
		IssuerAddress: c.Issuer, ServerName: c.ServerName, CABundleFile: c.CABundle, TokenFile: c.TokenFile,
		ClusterID: c.ClusterID, IssuerCluster: c.IssuerCluster, KeyType: c.KeyType, TTL: time.Duration(c.TTL), DNSNames: c.DNSNames,
		SDSSocket: c.SDSSocket, WorkloadSocket: c.WorkloadSocket, OutputDir: c.OutDir, HealthAddr: c.HealthAddr,
		ShutdownTimeout: time.Duration(c.ShutdownTimeout), Logger: log, WorkloadSocketGroup: c.WorkloadSocketGroup,
		Limits: agent.StreamLimits{MaxConnections: c.MaxConnections, MaxStreamsPerConnection: c.MaxStreamsPerConnection, MaxStreams: c.MaxStreams},
	}
	var err error
	if c.SPIFFEID != "" {
		if cfg.SPIFFEID, err = spiffeid.FromString(c.SPIFFEID); err != nil {
			return agent.Config{}, fmt.Errorf("spiffeID %q: %w", c.SPIFFEID, err)
		}
	}
	for _, l := range []struct {
		name string
		in   string
		out  *[]int
	}{
		{"workloadAllowedUIDs", c.WorkloadAllowedUIDs, &cfg.WorkloadPeers.UIDs},
		{"workloadAllowedGIDs", c.WorkloadAllowedGIDs, &cfg.WorkloadPeers.GIDs},
		{"sdsAllowedUIDs", c.SDSAllowedUIDs, &cfg.SDSPeers.UIDs},
		{"sdsAllowedGIDs", c.SDSAllowedGIDs, &cfg.SDSPeers.GIDs},
	} {
		if *l.out, err = parseIDs(l.in); err != nil {
			return agent.Config{}, fmt.Errorf("%s: %w", l.name, err)
		}
	}
	if c.WorkloadSocketMode != "" {
		mode, err := strconv.ParseUint(c.WorkloadSocketMode, 8, 32)
		if err != nil || mode == 0 || mode > 0o777 {
			return agent.Config{}, fmt.Errorf("workloadSocketMode %q: want an octal permission such as 0660", c.WorkloadSocketMode)
		}
		cfg.WorkloadSocketMode = os.FileMode(mode)
	}
	if err := cfg.Validate(); err != nil {
		return agent.Config{}, err
	}
	return cfg, nil
}

// parseIDs parses a comma-separated list of numeric uids or gids; empty
// means none.
func parseIDs(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		id, err := strconv.ParseUint(strings.TrimSpace(f), 10, 31)
		if err != nil {
			return nil, fmt.Errorf("%q is not a numeric id", f)
		}
		out = append(out, int(id))
	}
	return out, nil
}

// runAgent runs the agent until ctx is done, reloading the configuration
// with reload at every SIGHUP; started is the configuration cfg came from.
func runAgent(ctx context.Context, cfg agent.Config, started agentConfig, reload cliconfig.Reloader[agentConfig]) error {
	if cfg.Registerer == nil {
		// Served at /metrics on the health address.
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		cfg.Registerer = reg
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	reload.Apply = func(c agentConfig) error { return a.SetTokenFile(c.TokenFile) }
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go reload.Run(rctx, started)
	if err := a.Run(ctx); err != nil {
		return err
	}
	cfg.Logger.Info("meshca agent stopped")
	return nil
}
