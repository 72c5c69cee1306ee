package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/issuer/rootcm"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
	"github.com/meshca/meshca/trust"
)

// issuerGCPercent is the issuer's garbage-collection target unless GOGC is
// set. Issuance allocates tens of kilobytes of short-lived garbage per
// certificate over a live heap of a few tens of megabytes, so the default
// 100 collects several times a second under load; 400 cuts that fourfold
// for a heap a few times larger (docs/benchmarks.md, "Issuance through the whole gRPC path"). The agent,
// which must stay small, keeps Go's default.
const issuerGCPercent = 400

func setIssuerGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(issuerGCPercent)
	}
}

// issuerStack maps a validated issuer config to the issuer stack's; the
// caller sets Attestor and Serving.
func issuerStack(cfg issuerConfig) (stack.Config, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return stack.Config{}, fmt.Errorf("trust domain %q: %w", cfg.TrustDomain, err)
	}
	sc := stack.Config{
		Name: "meshca issuer", TrustDomain: td, Cluster: cfg.Cluster, DataDir: cfg.DataDir, RootDir: cfg.Root.Dir,
		Listen: cfg.Listen, ReusePort: cfg.ReusePort, Hosts: cfg.Hosts, IntermediateTTL: time.Duration(cfg.IntermediateTTL), MetricsListen: cfg.MetricsListen,
		LeafTTL: time.Duration(cfg.LeafTTL), LeafMinTTL: time.Duration(cfg.LeafMinTTL), LeafMaxTTL: time.Duration(cfg.LeafMaxTTL),
		OpenStore: storeOpener(cfg.Store, cfg.DataDir), Retention: cfg.Store.Retention.store(),
		Checkpoint:  cfg.Store.Checkpoint.dirConfig(cfg.DataDir),
		AdminSocket: cfg.AdminSocketAllow.unixConfig(cfg.AdminSocket), AdminTLSListen: cfg.Admin.Listen, Admins: adminIDs(cfg.Admin),
		Revocation: stack.Revocation{
			PollInterval: time.Duration(cfg.Revocation.PollInterval), MaxStale: time.Duration(cfg.Revocation.MaxStale),
			CRLValidity: time.Duration(cfg.Revocation.CRLValidity),
		},
		Limits: cfg.Limits.grpclimit(), JWT: cfg.JWT.stack(),
	}
	for _, cl := range cfg.Clusters {
		if cl.Name != cfg.Cluster {
			sc.Clusters = append(sc.Clusters, cl.Name)
		}
	}
	if cfg.Intermediate.enabled() {
		pc := cfg.Intermediate.plugged()
		sc.Plugged = &pc
	}
	if pki := cfg.UpstreamPKI.config(); pki.Enabled() {
		sc.UpstreamPKI = &pki
	}
	if u := cfg.Upstream; u.enabled() {
		sc.Upstream = &stack.Upstream{Address: u.Address, ServerName: u.ServerName, BundleFile: u.BundleFile, JoinTokenFile: u.JoinTokenFile,
			Replica: u.Replica}
	}
	if sc.RootConfigMaps, err = rootConfigMaps(cfg); err != nil {
		return stack.Config{}, err
	}
	if sc.DNSGrants, err = dnsGrants(cfg.DNSGrants, td); err != nil {
		return stack.Config{}, err
	}
	return sc, nil
}

// rootConfigMaps builds the istio-ca-root-cert controller of cfg, talking
// to the own cluster's API server; nil when disabled. Nothing is contacted
// before the stack runs it.
func rootConfigMaps(cfg issuerConfig) (*rootcm.Controller, error) {
	rc := cfg.IstioRootConfigMaps
	if !rc.Enabled {
		return nil, nil
	}
	kc := attest.KubeClientConfig{}
	for _, cl := range cfg.Clusters {
		if cl.Name == cfg.Cluster {
			kc.Kubeconfig, kc.Context = cl.Kubeconfig, cl.Context
		}
	}
	client, err := attest.NewKubeClient(kc)
	if err != nil {
		return nil, fmt.Errorf("istioRootConfigMaps: %w", err)
	}
	return rootcm.New(rc.rootcmConfig(client))
}

// devStack maps the dev config to the issuer stack's; the caller sets
// Attestor and Serving.
func devStack(cfg devConfig) (stack.Config, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return stack.Config{}, fmt.Errorf("trust domain %q: %w", cfg.TrustDomain, err)
	}
	grants, err := dnsGrants(cfg.DNSGrants, td)
	if err != nil {
		return stack.Config{}, err
	}
	return stack.Config{
		Name: "meshca dev", TrustDomain: td, Cluster: cfg.Cluster, DataDir: cfg.DataDir, DNSGrants: grants,
		Listen: cfg.Listen, Hosts: cfg.Hosts, IntermediateTTL: time.Duration(cfg.IntermediateTTL), MetricsListen: cfg.MetricsListen,
		LeafTTL: time.Duration(cfg.LeafTTL), LeafMinTTL: time.Duration(cfg.LeafMinTTL), LeafMaxTTL: time.Duration(cfg.LeafMaxTTL),
		OpenStore: storeOpener(cfg.Store, cfg.DataDir), Retention: cfg.Store.Retention.store(),
		Checkpoint:  cfg.Store.Checkpoint.dirConfig(cfg.DataDir),
		AdminSocket: socketAllowConfig{}.unixConfig(""), JWT: cfg.JWT.stack(),
	}, nil
}

// storeOpener opens the store cfg selects, for the issuer stack.
func storeOpener(cfg storeConfig, dataDir string) func(context.Context, *store.Metrics) (stack.Store, error) {
	return func(ctx context.Context, m *store.Metrics) (stack.Store, error) {
		db, err := openBackendWithMetrics(ctx, cfg, dataDir, m)
		if err != nil {
			return nil, err // not a nil backend in the interface
		}
		return db, nil
	}
}

// store is the retention job r configures; nil when disabled.
func (r retentionConfig) store() *store.RetentionConfig {
	if r.Disabled {
		return nil
	}
	return &store.RetentionConfig{Grace: time.Duration(r.Grace), Interval: time.Duration(r.Interval)}
}

// dirConfig places the checkpoints c configures in dataDir.
func (c checkpointConfig) dirConfig(dataDir string) checkpoint.DirConfig {
	return checkpoint.DirConfig{DataDir: dataDir, KeyFile: c.KeyFile, Dir: c.Dir, Interval: time.Duration(c.Interval), Keep: c.Keep}
}

func readPEMBundle(path string) (*trust.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return trust.ParseBundle(data)
}
