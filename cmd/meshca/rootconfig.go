package main

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/ca/vault"
)

// Root key kinds of `meshca root serve`.
const (
	rootKeyFile  = "file"
	rootKeyVault = "vault"
)

// rootConfig is the YAML configuration of `meshca root serve` (examples in
// deploy/examples/root*.yaml). Unknown fields are errors.
type rootConfig struct {
	// DataDir holds the admin socket, the SQLite database (by default) and,
	// for key kind file, the root keys. Default ./.meshca-root.
	DataDir string `json:"dataDir,omitempty"`
	// Listen is the address of the issuer-facing gRPC API (TLS; enrolment,
	// renewal, bundle). Default 127.0.0.1:15020; in a pod, 0.0.0.0:15020.
	Listen string `json:"listen,omitempty"`
	// AdminSocket is the Unix socket of `meshca admin` (mode 0600). Default
	// DATA_DIR/admin.sock.
	AdminSocket string `json:"adminSocket,omitempty"`
	// AdminSocketAllow names other users allowed on the admin socket.
	AdminSocketAllow socketAllowConfig `json:"adminSocketAllow,omitempty"`
	// Hosts are the DNS names and IPs in the serving certificate. Default
	// localhost, 127.0.0.1, meshca-root.meshca-system.svc.
	Hosts []string `json:"hosts,omitempty"`
	// IssuerServingNames are the DNS names (each with its subdomains) and
	// IPs a cluster issuer may ask its intermediate to vouch for (its
	// `hosts`); others are left out, as are this root's hosts and their
	// parent domains. Default istiod.istio-system.svc,
	// meshca.meshca-system.svc.
	IssuerServingNames []string `json:"issuerServingNames,omitempty"`
	// Key says where root keys live.
	Key rootKeySource `json:"key,omitempty"`
	// AdoptRoot, when set, makes an existing self-signed root (istiod's
	// istio-ca-secret) the first root when the store holds none; later
	// roots come from rotation, cross-signed with it. Needs key kind file
	// and no upstream. Default: none (meshca creates its first root).
	AdoptRoot *adoptRootConfig `json:"adoptRoot,omitempty"`
	// RootTTL is the life of each root. Default 87600h (10 years).
	RootTTL duration `json:"rootTTL,omitempty"`
	// IntermediateTTL is the life of each cluster intermediate. Default 48h
	// (ca.DefaultIntermediateTTL, as for an issuer's local root and meshca
	// dev): an issuer keeps issuing for about a day with the root
	// unreachable (it renews at half-life).
	IntermediateTTL duration `json:"intermediateTTL,omitempty"`
	// CredentialTTL is the life of an issuer's enrolment credential.
	// Default 720h (30 days); it is renewed with the intermediate.
	CredentialTTL duration `json:"credentialTTL,omitempty"`
	// Rotation of roots.
	Rotation rootRotationConfig `json:"rotation,omitempty"`
	// Upstream, when set, has an upstream PKI (step-ca, Google Cloud CAS)
	// issue each root's CA certificate for the key `key:` keeps; its root
	// becomes the trust anchor. rootTTL then does not apply, and rotation
	// is automatic.
	Upstream upstreamPKIConfig `json:"upstream,omitempty"`
	// Store selects the database; the default is SQLite in DataDir. Several
	// root replicas must share one PostgreSQL.
	Store storeConfig `json:"store,omitempty"`
	// Federation serves this mesh's bundle and fetches other meshes'.
	Federation federationConfig `json:"federation,omitempty"`
	// Admin optionally serves the admin API over mutual TLS too, to the
	// listed admin SPIFFE IDs holding an admin certificate signed directly
	// by this root (`meshca admin credential issue`).
	Admin adminTLSConfig `json:"admin,omitempty"`
	// MetricsListen, when set, is the ops listener (plain HTTP), e.g.
	// 127.0.0.1:9090: Prometheus metrics at /metrics, liveness at /healthz
	// and readiness at /readyz (store reachable, an active root that has
	// not expired). Default: none.
	MetricsListen string `json:"metricsListen,omitempty"`
	// Limits bound the connections, streams and bundle watches of Listen.
	Limits limitsConfig `json:"limits,omitempty"`
	// LogLevel is debug, info, warn or error; --log-level overrides it.
	// Default info. SIGHUP reloads it.
	LogLevel string `json:"logLevel,omitempty"`
	// LogFormat is json (the default) or text; --log-format overrides it.
	// Read at start: a change needs a restart.
	LogFormat string `json:"logFormat,omitempty"`
}

// rootKeySource is `key:` of the root config.
type rootKeySource struct {
	// Kind is "file" (default; keys in DATA_DIR, for trying meshca) or
	// "vault" (Vault Transit; the production choice: the key never leaves
	// Vault).
	Kind string `json:"kind,omitempty"`
	// Vault configures kind vault.
	Vault vaultKeyConfig `json:"vault,omitempty"`
}

// vaultKeyConfig is `key.vault:`.
type vaultKeyConfig struct {
	// Address of Vault, e.g. https://vault.vault.svc:8200. Required.
	Address string `json:"address,omitempty"`
	// Namespace (Vault Enterprise); empty means the root namespace.
	Namespace string `json:"namespace,omitempty"`
	// Mount of the Transit engine. Default transit.
	Mount string `json:"mount,omitempty"`
	// KeyPrefix starts the names of the Transit keys: one key per root
	// generation, PREFIX-<unix time>-<random hex>. Letters, digits, '_',
	// '-', '.' and '@'. Default meshca-root.
	KeyPrefix string `json:"keyPrefix,omitempty"`
	// KeyType: ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
	KeyType string `json:"keyType,omitempty"`
	// CACertFile verifies Vault's TLS certificate; empty means system roots.
	CACertFile string `json:"caCertFile,omitempty"`
	// Timeout of each Vault call. Default 10s.
	Timeout duration `json:"timeout,omitempty"`
	// Auth: method token (tokenFile), approle (roleID, secretIDFile) or
	// kubernetes (role, jwtFile).
	Auth vaultAuthConfig `json:"auth,omitempty"`
}

type vaultAuthConfig struct {
	Method       string `json:"method,omitempty"`
	TokenFile    string `json:"tokenFile,omitempty"`
	RoleID       string `json:"roleID,omitempty"`
	SecretIDFile string `json:"secretIDFile,omitempty"`
	Role         string `json:"role,omitempty"`
	JWTFile      string `json:"jwtFile,omitempty"`
	// Mount of the auth method; default approle or kubernetes.
	Mount string `json:"mount,omitempty"`
}

// adoptRootConfig is `adoptRoot:`.
type adoptRootConfig struct {
	// CertFile holds the root certificate (PEM), e.g. ca-cert.pem of
	// istio-ca-secret. Required.
	CertFile string `json:"certFile,omitempty"`
	// KeyFile holds its private key (PEM; PKCS#1, PKCS#8 or SEC 1), mode
	// 0600 or a kubelet Secret file. Required.
	KeyFile string `json:"keyFile,omitempty"`
	// MinRemaining is the life the root must have left. Default 720h.
	MinRemaining duration `json:"minRemaining,omitempty"`
}

// config maps `adoptRoot:` onto the root service's; nil when not set.
func (a *adoptRootConfig) config() *root.AdoptRoot {
	if a == nil {
		return nil
	}
	return &root.AdoptRoot{AdoptFiles: ca.AdoptFiles{CertFile: a.CertFile, KeyFile: a.KeyFile}, MinRemaining: time.Duration(a.MinRemaining)}
}

func (a *adoptRootConfig) validate(c rootConfig) error {
	if a == nil {
		return nil
	}
	switch {
	case a.CertFile == "" || a.KeyFile == "":
		return errors.New("adoptRoot: certFile and keyFile are required")
	case a.MinRemaining < 0:
		return errors.New("adoptRoot.minRemaining is negative")
	case c.Key.Kind == rootKeyVault:
		return errors.New("adoptRoot needs key.kind file: the adopted root's key is copied into the key store, and a Vault Transit key cannot be imported")
	case c.Upstream.Type != "":
		return errors.New("adoptRoot and upstream exclude each other: under an upstream PKI the upstream's root is the trust anchor")
	}
	return nil
}

// rootRotationConfig is `rotation:`.
type rootRotationConfig struct {
	// Auto rotates the root when less than a third of its life remains.
	// Default true.
	Auto *bool `json:"auto,omitempty"`
	// PropagationDelay is how long a new root is in the bundle before it
	// signs: long enough for every agent to have it. Default 1h.
	PropagationDelay duration `json:"propagationDelay,omitempty"`
}

// federationConfig is `federation:`.
type federationConfig struct {
	// Listen, when set, serves the SPIFFE bundle endpoint (HTTPS) there.
	Listen string `json:"listen,omitempty"`
	// TrustDomain whose bundle the endpoint serves (the mesh's own trust
	// domain). Required with Listen.
	TrustDomain string `json:"trustDomain,omitempty"`
	// Profile is https_spiffe (default: the endpoint presents an SVID for
	// spiffe://TD/meshca/bundle-endpoint signed by the root) or https_web
	// (certFile/keyFile from a web PKI).
	Profile  string `json:"profile,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// FederatesWith lists other trust domains whose bundles this mesh
	// trusts; they reach every agent.
	FederatesWith []federationRelationship `json:"federatesWith,omitempty"`
	// RefreshInterval when the remote gives no hint. Default 5m.
	RefreshInterval duration `json:"refreshInterval,omitempty"`
	// OIDC serves OpenID Connect discovery for the trust domain's JWT-SVIDs
	// on the bundle endpoint's listener.
	OIDC federationOIDC `json:"oidc,omitempty"`
}

// federationOIDC configures OIDC discovery on the bundle endpoint.
type federationOIDC struct {
	// IssuerURL is the https URL under which the bundle endpoint's listener
	// is reached for discovery; empty means no discovery.
	IssuerURL string `json:"issuerURL,omitempty"`
}

type federationRelationship struct {
	TrustDomain string `json:"trustDomain,omitempty"`
	// URL of the remote bundle endpoint (https://...).
	URL string `json:"url,omitempty"`
	// Profile https_spiffe (default) or https_web.
	Profile string `json:"profile,omitempty"`
	// EndpointSPIFFEID the remote endpoint must present (https_spiffe).
	// Default spiffe://TD/meshca/bundle-endpoint.
	EndpointSPIFFEID string `json:"endpointSPIFFEID,omitempty"`
	// BundleFile is the remote's initial SPIFFE bundle (JSON, as served by
	// its endpoint); required for https_spiffe.
	BundleFile string `json:"bundleFile,omitempty"`
	// CACertFile verifies an https_web endpoint; empty means system roots.
	CACertFile string `json:"caCertFile,omitempty"`
}

func defaultRootConfig() rootConfig {
	return rootConfig{
		DataDir: "./.meshca-root",
		Listen:  "127.0.0.1:15020",
		Hosts:   []string{"localhost", "127.0.0.1", "meshca-root.meshca-system.svc"},
	}
}

func (c rootConfig) autoRotate() bool { return c.Rotation.Auto == nil || *c.Rotation.Auto }

// validate checks what can be checked without I/O.
func (c rootConfig) validate() error {
	if c.DataDir == "" {
		return errors.New("dataDir is required")
	}
	if len(c.Hosts) == 0 {
		return errors.New("hosts: at least one serving name is required")
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if err := c.AdoptRoot.validate(c); err != nil {
		return err
	}
	if err := c.Upstream.config().Validate(); err != nil {
		return err
	}
	for name, d := range map[string]duration{"rootTTL": c.RootTTL, "intermediateTTL": c.IntermediateTTL,
		"credentialTTL": c.CredentialTTL, "rotation.propagationDelay": c.Rotation.PropagationDelay} {
		if d < 0 {
			return fmt.Errorf("%s is negative", name)
		}
	}
	if c.RootTTL != 0 && c.IntermediateTTL != 0 && time.Duration(c.IntermediateTTL) >= time.Duration(c.RootTTL) {
		return errors.New("intermediateTTL must be shorter than rootTTL")
	}
	switch c.Key.Kind {
	case "", rootKeyFile:
	case rootKeyVault:
		if err := c.vaultConfig("check").Validate(); err != nil {
			return fmt.Errorf("key.vault: %w", err)
		}
		// Key names are PREFIX-<unix time>-<random hex>.
		if p := c.Key.Vault.KeyPrefix; p != "" && c.vaultConfig(p+"-0").Validate() != nil {
			return fmt.Errorf("key.vault.keyPrefix %q: use letters, digits, '_', '-', '.' and '@'", p)
		}
	default:
		return fmt.Errorf("key.kind %q: want file or vault", c.Key.Kind)
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	if err := c.Admin.validate(); err != nil {
		return err
	}
	return c.Federation.validate()
}

// keys is where the root keeps its keys: files in DataDir (kind file), or
// Vault Transit keys named KeyPrefix-<unix time>-<random hex> (kind vault;
// an empty KeyPrefix means root.DefaultVaultKeyName).
func (c rootConfig) keys() root.Keys {
	if c.Key.Kind != rootKeyVault {
		return root.FileKeys{Dir: c.DataDir}
	}
	prefix := cmp.Or(c.Key.Vault.KeyPrefix, root.DefaultVaultKeyName)
	return root.VaultKeys{Config: c.vaultConfig(prefix), Prefix: prefix}
}

// vaultConfig is the ca/vault template for one Transit key name.
func (c rootConfig) vaultConfig(keyName string) vault.Config {
	v := c.Key.Vault
	return vault.Config{
		Address: v.Address, Namespace: v.Namespace, Mount: v.Mount, KeyName: keyName, KeyType: v.KeyType,
		CACertFile: v.CACertFile, Timeout: time.Duration(v.Timeout),
		Auth: v.Auth.config(),
	}
}

// config maps `auth:` of a Vault connection onto ca/vault's.
func (a vaultAuthConfig) config() vault.AuthConfig {
	return vault.AuthConfig{
		Method: a.Method, TokenFile: a.TokenFile,
		AppRole:    vault.AppRoleConfig{RoleID: a.RoleID, SecretIDFile: a.SecretIDFile, Mount: a.Mount},
		Kubernetes: vault.KubernetesConfig{Role: a.Role, JWTFile: a.JWTFile, Mount: a.Mount},
	}
}

// profile is the endpoint's profile, https_spiffe by default.
func (f federationConfig) profile() string {
	return cmp.Or(f.Profile, string(federation.ProfileHTTPSSPIFFE))
}

// profile is the relationship's profile, https_spiffe by default.
func (r federationRelationship) profile() string {
	return cmp.Or(r.Profile, string(federation.ProfileHTTPSSPIFFE))
}

// files maps the relationship to the files the root stack loads: the
// endpoint SPIFFE ID defaults to spiffe://TD/meshca/bundle-endpoint.
func (r federationRelationship) files() (federation.RelationshipFiles, error) {
	td, err := spiffeid.TrustDomainFromString(r.TrustDomain)
	if err != nil {
		return federation.RelationshipFiles{}, fmt.Errorf("trustDomain %q: %w", r.TrustDomain, err)
	}
	f := federation.RelationshipFiles{
		TrustDomain: td, URL: r.URL, Profile: federation.Profile(r.profile()), BundleFile: r.BundleFile, CACertFile: r.CACertFile,
	}
	if f.Profile == federation.ProfileHTTPSSPIFFE {
		id := cmp.Or(r.EndpointSPIFFEID, "spiffe://"+td.Name()+"/meshca/bundle-endpoint")
		if f.EndpointSPIFFEID, err = spiffeid.FromString(id); err != nil {
			return federation.RelationshipFiles{}, fmt.Errorf("endpointSPIFFEID: %w", err)
		}
	}
	return f, nil
}

func (f federationConfig) validate() error {
	if f.Listen != "" {
		if _, err := spiffeid.TrustDomainFromString(f.TrustDomain); err != nil {
			return fmt.Errorf("federation.trustDomain %q: %w", f.TrustDomain, err)
		}
		switch f.Profile {
		case "", "https_spiffe":
		case "https_web":
			if f.CertFile == "" || f.KeyFile == "" {
				return errors.New("federation: profile https_web needs certFile and keyFile")
			}
		default:
			return fmt.Errorf("federation.profile %q: want https_spiffe or https_web", f.Profile)
		}
	}
	if f.OIDC.IssuerURL != "" {
		if f.Listen == "" {
			return errors.New("federation.oidc.issuerURL needs federation.listen: discovery is served on the bundle endpoint")
		}
		if err := federation.CheckOIDCIssuer(f.OIDC.IssuerURL); err != nil {
			return fmt.Errorf("federation.oidc.issuerURL: %w", err)
		}
	}
	// The relationships' rules are the federation package's.
	seen := map[string]bool{}
	for i, r := range f.FederatesWith {
		rf, err := r.files()
		if err == nil {
			err = rf.Validate()
		}
		if err != nil {
			return fmt.Errorf("federation.federatesWith[%d] (%s): %w", i, r.TrustDomain, err)
		}
		if seen[rf.TrustDomain.Name()] {
			return fmt.Errorf("federation.federatesWith: %s listed twice", rf.TrustDomain.Name())
		}
		seen[rf.TrustDomain.Name()] = true
	}
	return nil
}
