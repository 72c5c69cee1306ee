package main

import (
	"github.com/meshca/meshca/cmd/internal/cliconfig"
)

// duration, loadConfig and decodeStrict are shared with the agent-only
// binary (cmd/internal/cliconfig).
type duration = cliconfig.Duration

func loadConfig(path string, cfg any) error { return cliconfig.Load(path, cfg) }

func decodeStrict(data []byte, cfg any) error { return cliconfig.DecodeStrict(data, cfg) }

// devConfig is the YAML configuration of `meshca dev`. Every field is
// optional; flags override the file.
type devConfig struct {
	// DataDir holds the root key, the dev token key, the database and
	// bundle.pem. Default ./.meshca-dev.
	DataDir string `json:"dataDir,omitempty"`
	// Listen is the gRPC address. Default 127.0.0.1:8443.
	Listen string `json:"listen,omitempty"`
	// MetricsListen, when set, serves /metrics, /healthz and /readyz over
	// plain HTTP there, e.g. 127.0.0.1:9090; --metrics-listen overrides it.
	// Default empty: no operations listener.
	MetricsListen string `json:"metricsListen,omitempty"`
	// TrustDomain of issued SPIFFE IDs. Default cluster.local.
	TrustDomain string `json:"trustDomain,omitempty"`
	// Cluster is the issuer's cluster name. Default dev.
	Cluster string `json:"cluster,omitempty"`
	// Hosts are the DNS names and IPs in the serving certificate. Default
	// 127.0.0.1, ::1, localhost, istiod.istio-system.svc; given here, they
	// replace the defaults. --host adds names to them.
	Hosts []string `json:"hosts,omitempty"`
	// Leaf lifetimes: default 1h, clamped to [5m, 24h].
	LeafTTL    duration `json:"leafTTL,omitempty"`
	LeafMinTTL duration `json:"leafMinTTL,omitempty"`
	LeafMaxTTL duration `json:"leafMaxTTL,omitempty"`
	// IntermediateTTL is the lifetime of each intermediate minted under
	// the root; the next one is prepared at half of it and used from 1/6
	// before the end. Default 48h (ca.DefaultIntermediateTTL, as under the
	// central root), minimum 30s.
	IntermediateTTL duration `json:"intermediateTTL,omitempty"`
	// JWT tunes the JWT-SVIDs the issuer mints.
	JWT jwtConfig `json:"jwt,omitempty"`
	// DNSGrants name the identities whose certificates may carry DNS
	// names, and which: istiod's serving names, say. Default none: every
	// DNS name in a CSR is refused.
	DNSGrants []dnsGrantConfig `json:"dnsGrants,omitempty"`
	// Store selects the database; the default is SQLite in DataDir.
	Store storeConfig `json:"store,omitempty"`
	// LogLevel is debug, info, warn or error; --log-level overrides it.
	// Default info. SIGHUP reloads it.
	LogLevel string `json:"logLevel,omitempty"`
	// LogFormat is json (the default) or text; --log-format overrides it.
	// Read at start: a change needs a restart.
	LogFormat string `json:"logFormat,omitempty"`
}

func defaultDevConfig() devConfig {
	return devConfig{
		DataDir:     "./.meshca-dev",
		Listen:      "127.0.0.1:8443",
		TrustDomain: "cluster.local",
		Cluster:     "dev",
		Hosts:       []string{"127.0.0.1", "::1", "localhost", "istiod.istio-system.svc"},
	}
}
