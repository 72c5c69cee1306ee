package main

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/issuer/rootcm"
)

// Attestor kinds of a cluster in `meshca issuer serve`.
const (
	attestorTokenReview = "tokenreview"
	attestorJWKS        = "jwks"
	attestorDev         = "dev"
)

// issuerConfig is the YAML configuration of `meshca issuer serve`
// (examples in deploy/examples/issuer*.yaml). Unknown fields are errors.
type issuerConfig struct {
	// DataDir holds bundle.pem, the SQLite database (by default) and, unless
	// root.dir says otherwise, the root key. Default ./.meshca-issuer.
	DataDir string `json:"dataDir,omitempty"`
	// Listen is the gRPC (TLS) address. Default 127.0.0.1:15012; in a pod,
	// set 0.0.0.0:15012.
	Listen string `json:"listen,omitempty"`
	// MetricsListen, when set, serves /metrics, /healthz and /readyz over
	// plain HTTP there, e.g. 127.0.0.1:9090 (0.0.0.0:9090 in a pod, for
	// Prometheus and the kubelet). Default empty: no operations listener.
	MetricsListen string `json:"metricsListen,omitempty"`
	// ReusePort opens listen and metricsListen with SO_REUSEPORT, so that
	// several issuers of the same user share those ports on one host and
	// the kernel spreads connections among them: replicas of a
	// host-network pod on one node. Each replica's probe may then be
	// answered by another. Default false: a port in use is an error.
	ReusePort bool `json:"reusePort,omitempty"`
	// TrustDomain of issued SPIFFE IDs. Default cluster.local.
	TrustDomain string `json:"trustDomain,omitempty"`
	// Cluster is this issuer's own cluster: it names the intermediate, is
	// recorded with every certificate, and is where requests with an empty
	// clusterid are attested. Required; must be one of Clusters.
	Cluster string `json:"cluster,omitempty"`
	// Hosts are the DNS names and IPs in the serving certificate. Default
	// istiod.istio-system.svc, meshca.meshca-system.svc, localhost, 127.0.0.1.
	Hosts []string `json:"hosts,omitempty"`
	// Leaf lifetimes: default 1h, clamped to [5m, 24h].
	LeafTTL    duration `json:"leafTTL,omitempty"`
	LeafMinTTL duration `json:"leafMinTTL,omitempty"`
	LeafMaxTTL duration `json:"leafMaxTTL,omitempty"`
	// IntermediateTTL is the lifetime of each intermediate minted under
	// Root; the next one is prepared at half of it and used from 1/6 before
	// the end. Default 48h (ca.DefaultIntermediateTTL, as under the central
	// root), minimum 30s. With Upstream the root sets it.
	IntermediateTTL duration `json:"intermediateTTL,omitempty"`
	// JWT tunes the JWT-SVIDs the issuer mints.
	JWT jwtConfig `json:"jwt,omitempty"`
	// DNSGrants name the identities whose certificates may carry DNS
	// names, and which: istiod's serving names, say. Under Upstream the
	// cluster's record on the root (meshca admin cluster add --dns-name)
	// must list them too. Default none: every DNS name in a CSR is refused.
	DNSGrants []dnsGrantConfig `json:"dnsGrants,omitempty"`
	// Root is a local file root CA key, for a self-contained issuer. Leave
	// it empty when Upstream or Intermediate is set.
	Root rootKeyConfig `json:"root,omitempty"`
	// Intermediate is an intermediate CA someone else issued and keeps
	// (Istio's plug-in CA Secret cacerts): the issuer signs leaves with it
	// directly and holds no root key. Exclusive with Root and Upstream.
	Intermediate intermediateConfig `json:"intermediate,omitempty"`
	// Upstream is the central root (`meshca root serve`): the issuer enrols
	// with it, keeps its intermediate key in memory only, renews and
	// rotates the intermediate, and relays the trust bundle to agents.
	Upstream upstreamConfig `json:"upstream,omitempty"`
	// UpstreamPKI has an existing PKI (step-ca, Vault PKI, Google Cloud
	// CAS) certify the key of Root instead of meshca self-signing it, as
	// `upstream:` of `meshca root serve` does for the central root: the
	// upstream's root is the workloads' trust anchor, the certificate is
	// renewed with a third of its life left, and replicas sharing the
	// store share the key (root.dir). Exclusive with Upstream (the central
	// root) and Intermediate. See the README, "Upstream PKI".
	UpstreamPKI upstreamPKIConfig `json:"upstreamPKI,omitempty"`
	// Store selects the database; the default is SQLite in DataDir.
	// Replicas of one cluster's issuer share one PostgreSQL: certificates,
	// audit log and revocations.
	Store storeConfig `json:"store,omitempty"`
	// AdminSocket is the Unix socket of `meshca admin` (revoke, certs,
	// audit), mode 0600. Default DATA_DIR/admin.sock.
	AdminSocket string `json:"adminSocket,omitempty"`
	// AdminSocketAllow names other users allowed on the admin socket.
	AdminSocketAllow socketAllowConfig `json:"adminSocketAllow,omitempty"`
	// Admin optionally serves the admin API over mutual TLS too.
	Admin adminTLSConfig `json:"admin,omitempty"`
	// Revocation tunes how replicas follow the deny-list.
	Revocation revocationConfig `json:"revocation,omitempty"`
	// Limits bound the connections, streams and bundle watches of Listen.
	Limits limitsConfig `json:"limits,omitempty"`
	// Clusters lists every cluster whose workloads this issuer attests.
	// Required: at least the local one. SIGHUP reloads the clusters (their
	// attestors, caches and policies) without a restart.
	Clusters []clusterConfig `json:"clusters,omitempty"`
	// IstioRootConfigMaps keeps Istio's istio-ca-root-cert ConfigMap in the
	// namespaces of the issuer's own cluster. Default off.
	IstioRootConfigMaps istioRootConfigMapsConfig `json:"istioRootConfigMaps,omitempty"`
	// LogLevel is debug, info, warn or error; --log-level overrides it.
	// Default info. SIGHUP reloads it.
	LogLevel string `json:"logLevel,omitempty"`
	// LogFormat is json (the default) or text; --log-format overrides it.
	// Read at start: a change needs a restart.
	LogFormat string `json:"logFormat,omitempty"`
}

// istioRootConfigMapsConfig maps to rootcm.Config (package issuer/rootcm):
// one replica at a time, elected by a Lease, writes the ConfigMap (key
// root-cert.pem, every root of the issuer's own trust domain) through the
// own cluster's clusters[] kubeconfig (in-cluster by default).
type istioRootConfigMapsConfig struct {
	// Enabled turns the ConfigMaps on. Default false.
	Enabled bool `json:"enabled,omitempty"`
	// Namespaces, when set, are the only namespaces written. Default: all.
	Namespaces []string `json:"namespaces,omitempty"`
	// Selector is a namespace label selector, e.g. istio-injection=enabled.
	// Default: every namespace.
	Selector string `json:"selector,omitempty"`
	// LeaseNamespace holds the Lease meshca-istio-root-configmaps. Required
	// when Enabled (the issuer's own namespace).
	LeaseNamespace string `json:"leaseNamespace,omitempty"`
	// Identity names this replica in the Lease. Default: the short host
	// name (the pod name).
	Identity string `json:"identity,omitempty"`
	// OwnerClusterRole names a ClusterRole that owns the ConfigMaps and the
	// Lease: they carry an ownerReference to it, and Kubernetes' garbage
	// collector deletes them when it is deleted (the Helm chart names its
	// own, so that `helm uninstall` removes them). Nothing is written while
	// it does not exist. Default: none, the objects stay until deleted by
	// hand.
	OwnerClusterRole string `json:"ownerClusterRole,omitempty"`
}

// rootcmConfig maps c to the controller's config with the given client.
func (c istioRootConfigMapsConfig) rootcmConfig(client kubernetes.Interface) rootcm.Config {
	id := c.Identity
	if id == "" {
		host, _ := os.Hostname()
		id, _, _ = strings.Cut(host, ".")
	}
	return rootcm.Config{Client: client, Namespaces: c.Namespaces, Selector: c.Selector, LeaseNamespace: c.LeaseNamespace, Identity: id,
		OwnerClusterRole: c.OwnerClusterRole}
}

// validate checks c without a client.
func (c istioRootConfigMapsConfig) validate() error {
	if !c.Enabled {
		return nil
	}
	rc := c.rootcmConfig(placeholderClient)
	if err := rc.Validate(); err != nil {
		return fmt.Errorf("istioRootConfigMaps: %w", err)
	}
	return nil
}

// placeholderClient stands in for the API client when a config is
// validated: it is never called.
var placeholderClient kubernetes.Interface = &kubernetes.Clientset{}

// rootKeyConfig locates the file root CA.
type rootKeyConfig struct {
	// Dir holds root-key.pem and root.pem, created on first start. Empty
	// means DataDir.
	Dir string `json:"dir,omitempty"`
}

// intermediateConfig is `intermediate:`, mapped to issuer.PluggedCAConfig:
// the files of Istio's cacerts Secret. meshca cannot renew the
// intermediate (it has no key above it); it reads the files again every
// pollInterval and switches to a replaced set once it passes every check.
type intermediateConfig struct {
	// CertFile is the intermediate's certificate (cacerts ca-cert.pem).
	CertFile string `json:"certFile,omitempty"`
	// KeyFile is its private key (ca-key.pem), mode 0600 or stricter.
	KeyFile string `json:"keyFile,omitempty"`
	// ChainFile is the chain from the intermediate up to the root
	// (cert-chain.pem). Empty means the root signed the intermediate.
	ChainFile string `json:"chainFile,omitempty"`
	// RootFile holds the root(s) (root-cert.pem): bundle.pem, the bundle
	// served to agents and the istio-ca-root-cert ConfigMaps.
	RootFile string `json:"rootFile,omitempty"`
	// MinRemaining is the life the intermediate must have left to be
	// loaded. Default 24h.
	MinRemaining duration `json:"minRemaining,omitempty"`
	// PollInterval is how often the files are read again. Default 10s.
	PollInterval duration `json:"pollInterval,omitempty"`
}

func (c intermediateConfig) enabled() bool { return c != intermediateConfig{} }

// plugged maps c to the issuer's config.
func (c intermediateConfig) plugged() issuer.PluggedCAConfig {
	return issuer.PluggedCAConfig{
		Files:        ca.PluggedFiles{CertFile: c.CertFile, KeyFile: c.KeyFile, ChainFile: c.ChainFile, RootFile: c.RootFile},
		MinRemaining: time.Duration(c.MinRemaining), PollInterval: time.Duration(c.PollInterval),
	}
}

// validate checks c (when set) against the rest of the issuer config.
func (c intermediateConfig) validate(cfg issuerConfig) error {
	switch {
	case !c.enabled():
		return nil
	case cfg.Upstream.enabled() || cfg.Root.Dir != "":
		return errors.New("intermediate excludes root.dir and upstream: the plugged intermediate is the issuer's only CA")
	case cfg.IntermediateTTL != 0:
		return errors.New("intermediateTTL does not apply to a plugged intermediate: meshca mints none")
	}
	if err := c.plugged().Validate(); err != nil {
		return fmt.Errorf("intermediate: %w (certFile, keyFile and rootFile are required)", err)
	}
	return nil
}

// adminTLSConfig is `admin:`: the admin API over mutual TLS, for admins
// holding an admin certificate (`meshca admin credential issue`): an
// X509-SVID signed directly by a root, never through a cluster
// intermediate.
type adminTLSConfig struct {
	// Listen, when set, serves the admin API there (TLS with the server's
	// serving certificate).
	Listen string `json:"listen,omitempty"`
	// SPIFFEIDs are the admins allowed in; every other identity is refused
	// at the handshake. Required with Listen.
	SPIFFEIDs []string `json:"spiffeIDs,omitempty"`
}

// socketAllowConfig is `adminSocketAllow:`: who may connect to the admin
// socket besides the server's own user and root (checked with
// SO_PEERCRED). Empty means nobody else. The socket stays mode 0600 unless
// someone else is allowed (then 0666, the check alone deciding); its
// directory must let them through too.
type socketAllowConfig struct {
	// UIDs are allowed users.
	UIDs []uint32 `json:"uids,omitempty"`
	// GIDs are allowed primary groups.
	GIDs []uint32 `json:"gids,omitempty"`
}

// unixConfig is the admin socket at path allowing a.
func (a socketAllowConfig) unixConfig(path string) adminapi.UnixConfig {
	c := adminapi.UnixConfig{Path: path, AllowUIDs: a.UIDs, AllowGIDs: a.GIDs}
	if len(a.UIDs)+len(a.GIDs) > 0 {
		c.Mode = 0o666
	}
	return c
}

// revocationConfig is `revocation:`.
type revocationConfig struct {
	// PollInterval is how often a replica reloads the deny-list from the
	// store. Default 1s.
	PollInterval duration `json:"pollInterval,omitempty"`
	// MaxStale is how old the deny-list may get (store unreachable) before
	// issuance fails closed. Default 10s.
	MaxStale duration `json:"maxStale,omitempty"`
	// CRLValidity is the life of each CRL (re-signed at half of it and on
	// every change). Default 24h.
	CRLValidity duration `json:"crlValidity,omitempty"`
}

func (a adminTLSConfig) validate() error {
	if a.Listen == "" {
		if len(a.SPIFFEIDs) != 0 {
			return errors.New("admin.spiffeIDs needs admin.listen")
		}
		return nil
	}
	if len(a.SPIFFEIDs) == 0 {
		return errors.New("admin.listen needs at least one admin in admin.spiffeIDs")
	}
	for _, id := range a.SPIFFEIDs {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("admin.spiffeIDs: %q: %w", id, err)
		}
	}
	return nil
}

// adminIDs returns the validated admin SPIFFE IDs.
func adminIDs(a adminTLSConfig) []spiffeid.ID {
	var ids []spiffeid.ID
	for _, id := range a.SPIFFEIDs {
		ids = append(ids, spiffeid.RequireFromString(id)) // validated with the config
	}
	return ids
}

// upstreamConfig is `upstream:` of the issuer config.
type upstreamConfig struct {
	// Address of the root's gRPC API, e.g. meshca-root.meshca-system.svc:15020.
	Address string `json:"address,omitempty"`
	// ServerName checked in the root's certificate; default the host of
	// Address.
	ServerName string `json:"serverName,omitempty"`
	// BundleFile holds the root CA certificate(s) (PEM) that authenticate
	// the root at first contact; later the issuer follows the root's
	// published bundle. Required.
	BundleFile string `json:"bundleFile,omitempty"`
	// JoinTokenFile holds the token from `meshca admin cluster add`.
	// Needed only when DATA_DIR holds no credential: afterwards the issuer
	// renews with the credential it keeps there. The issuer removes the
	// file once the root has accepted a one-time token (a read-only mount,
	// such as a Kubernetes Secret, is left alone with a warning); a token of
	// several replicas (`cluster add --replicas N`) is kept.
	JoinTokenFile string `json:"joinTokenFile,omitempty"`
	// Replica names this issuer among the replicas of its cluster that
	// share a join token of several replicas: a DNS label, unique among
	// them, stable across restarts (the pod name). Default: the short host
	// name.
	Replica string `json:"replica,omitempty"`
}

func (u upstreamConfig) enabled() bool { return u.Address != "" }

// clusterConfig is one cluster an issuer attests tokens from.
type clusterConfig struct {
	// Name is the cluster's name, matched against the gRPC metadata
	// "clusterid". Required.
	Name string `json:"name,omitempty"`
	// Aliases are further clusterid values meaning this cluster (istio-agent
	// sends the Istio cluster name, often "Kubernetes"). The empty clusterid
	// always means the issuer's own cluster.
	Aliases []string `json:"aliases,omitempty"`
	// Attestor is "tokenreview" (default), "jwks" or "dev".
	Attestor string `json:"attestor,omitempty"`
	// Kubeconfig and Context locate the API server (tokenreview, jwks).
	// Empty Kubeconfig means in-cluster (the issuer pod's service account).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	Context    string `json:"context,omitempty"`
	// Audiences accepted in tokens. Default meshca and istio-ca.
	Audiences []string `json:"audiences,omitempty"`
	// AllowUnboundTokens accepts tokens not bound to a pod (tokenreview).
	// Default false: pod binding is required.
	AllowUnboundTokens bool `json:"allowUnboundTokens,omitempty"`
	// Policy is the namespace/service-account allow and deny list.
	Policy attest.PolicyConfig `json:"policy,omitempty"`
	// Cache of positive results. Default TTL: 10s for tokenreview (so a
	// revoked token lives at most that much longer), 5m otherwise.
	Cache cacheConfig `json:"cache,omitempty"`
	// JWKS configures attestor "jwks".
	JWKS jwksConfig `json:"jwks,omitempty"`
	// DevKeyDir holds the dev token signer key for attestor "dev" (tokens
	// from `meshca dev token --data-dir DIR`). Empty means DataDir. Never
	// use it in production.
	DevKeyDir string `json:"devKeyDir,omitempty"`
	// APITimeout bounds each API server call. Default 5s.
	APITimeout duration `json:"apiTimeout,omitempty"`
}

// cacheConfig tunes one cluster's attestation cache.
type cacheConfig struct {
	// Disabled turns the cache off: every request is attested afresh.
	Disabled bool `json:"disabled,omitempty"`
	// Size bounds the number of cached identities. Default 10000.
	Size int `json:"size,omitempty"`
	// TTL bounds how long a result is reused (never past the token's exp).
	TTL duration `json:"ttl,omitempty"`
}

// jwksConfig is the production JWKS mode: keys from the API server.
type jwksConfig struct {
	// Issuer is the API server's --service-account-issuer. Required.
	Issuer string `json:"issuer,omitempty"`
	// RefreshInterval, MaxStale: see attest.RemoteKeysConfig (5m, 1h).
	RefreshInterval duration `json:"refreshInterval,omitempty"`
	MaxStale        duration `json:"maxStale,omitempty"`
}

func defaultIssuerConfig() issuerConfig {
	return issuerConfig{
		DataDir:     "./.meshca-issuer",
		Listen:      "127.0.0.1:15012",
		TrustDomain: "cluster.local",
		Hosts:       []string{"istiod.istio-system.svc", "meshca.meshca-system.svc", "localhost", "127.0.0.1"},
	}
}

// validate checks what can be checked without I/O.
func (c issuerConfig) validate() error {
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		return fmt.Errorf("trustDomain %q: %w", c.TrustDomain, err)
	}
	if c.Cluster == "" {
		return errors.New("cluster is required")
	}
	if err := validateListen("metricsListen", c.MetricsListen); err != nil {
		return err
	}
	if c.Upstream.enabled() {
		if c.Root.Dir != "" {
			return errors.New("root.dir and upstream are exclusive: with upstream, the root's key stays with the root")
		}
		if c.Upstream.BundleFile == "" {
			return errors.New("upstream.bundleFile is required (the root CA certificate, e.g. from the root's DATA_DIR/bundle.pem)")
		}
	} else if c.Upstream != (upstreamConfig{}) {
		return errors.New("upstream.address is required when upstream is set")
	}
	if err := c.validateUpstreamPKI(); err != nil {
		return err
	}
	if err := c.Intermediate.validate(c); err != nil {
		return err
	}
	if ttl := time.Duration(c.IntermediateTTL); ttl != 0 && ttl < issuer.MinLocalIntermediateTTL {
		return fmt.Errorf("intermediateTTL %s is below the minimum %s", ttl, issuer.MinLocalIntermediateTTL)
	}
	if err := c.JWT.validate(); err != nil {
		return err
	}
	if err := c.Admin.validate(); err != nil {
		return err
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if c.Revocation.PollInterval < 0 || c.Revocation.MaxStale < 0 || c.Revocation.CRLValidity < 0 {
		return errors.New("revocation: durations must not be negative")
	}
	if err := c.IstioRootConfigMaps.validate(); err != nil {
		return err
	}
	if len(c.Clusters) == 0 {
		return errors.New("clusters: at least the issuer's own cluster is required")
	}
	names := map[string]bool{}
	for i, cl := range c.Clusters {
		if err := cl.validate(); err != nil {
			return fmt.Errorf("clusters[%d] %q: %w", i, cl.Name, err)
		}
		for _, n := range append([]string{cl.Name}, cl.Aliases...) {
			if names[n] {
				return fmt.Errorf("clusters[%d]: name or alias %q is used twice", i, n)
			}
			names[n] = true
		}
	}
	if !slices.ContainsFunc(c.Clusters, func(cl clusterConfig) bool { return cl.Name == c.Cluster }) {
		return fmt.Errorf("cluster %q is not in clusters", c.Cluster)
	}
	for i, g := range c.DNSGrants {
		if g.Cluster != "" && !slices.ContainsFunc(c.Clusters, func(cl clusterConfig) bool { return cl.Name == g.Cluster }) {
			return fmt.Errorf("dnsGrants[%d]: cluster %q is not in clusters", i, g.Cluster)
		}
	}
	td, _ := spiffeid.TrustDomainFromString(c.TrustDomain)
	_, err := dnsGrants(c.DNSGrants, td)
	return err
}

// validateUpstreamPKI checks upstreamPKI: an upstream PKI certifies the
// issuer's own root key, so it excludes the central root (upstream), whose
// root holds the key above the issuer, and a plugged intermediate.
func (c issuerConfig) validateUpstreamPKI() error {
	pki := c.UpstreamPKI.config()
	switch {
	case !pki.Enabled():
		if err := pki.Validate(); err != nil {
			return fmt.Errorf("upstreamPKI: %w", err)
		}
		return nil
	case c.Upstream != (upstreamConfig{}):
		return errors.New("upstreamPKI and upstream exclude each other: upstream is the central meshca root, which certifies the issuer " +
			"itself; configure the upstream PKI on the root (`meshca root serve`, upstream:) instead, or drop upstream: for a standalone issuer")
	case c.Intermediate.enabled():
		return errors.New("upstreamPKI and intermediate exclude each other: the plugged intermediate is the issuer's only CA")
	}
	if err := pki.Validate(); err != nil {
		return fmt.Errorf("upstreamPKI: %w", err)
	}
	return nil
}

func (c clusterConfig) validate() error {
	if c.Name == "" {
		return errors.New("name is required")
	}
	if slices.Contains(c.Aliases, "") {
		return errors.New("empty alias (the empty clusterid always means the issuer's own cluster)")
	}
	switch c.attestor() {
	case attestorTokenReview:
	case attestorJWKS:
		if c.JWKS.Issuer == "" {
			return errors.New("jwks.issuer is required for attestor jwks")
		}
	case attestorDev:
		if c.AllowUnboundTokens || c.Kubeconfig != "" {
			return errors.New("attestor dev takes no kubeconfig or allowUnboundTokens")
		}
	default:
		return fmt.Errorf("attestor %q: want tokenreview, jwks or dev", c.Attestor)
	}
	if c.attestor() != attestorTokenReview && c.AllowUnboundTokens {
		return errors.New("allowUnboundTokens applies to attestor tokenreview only")
	}
	if c.Cache.Size < 0 || c.Cache.TTL < 0 || c.APITimeout < 0 {
		return errors.New("negative cache size, cache ttl or apiTimeout")
	}
	kc := attest.KubeClientConfig{Kubeconfig: c.Kubeconfig, Context: c.Context}
	if err := kc.Validate(); err != nil {
		return err
	}
	return c.Policy.Validate()
}

// attestor is the cluster's attestor kind, tokenreview by default.
func (c clusterConfig) attestor() string { return cmp.Or(c.Attestor, attestorTokenReview) }

// cacheTTL is the cluster's cache TTL with the attestor-specific default.
func (c clusterConfig) cacheTTL() time.Duration {
	return attest.CacheTTL(time.Duration(c.Cache.TTL), c.attestor() == attestorTokenReview)
}

// validateListen checks that addr, the value of field, is empty or a
// host:port address.
func validateListen(field, addr string) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s %q: %w", field, addr, err)
	}
	return nil
}
