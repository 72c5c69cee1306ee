package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIssuerExampleConfigs decodes and validates every example in deploy/,
// so the documented configurations cannot rot.
func TestIssuerExampleConfigs(t *testing.T) {
	checkExampleConfigs(t, "../../deploy/examples/issuer*.yaml", 3, defaultIssuerConfig)
}

func TestIssuerConfigValidate(t *testing.T) {
	base := "cluster: east\nclusters:\n"
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"no cluster", "clusters: [{name: a}]\n", "cluster is required"},
		{"no clusters", "cluster: east\n", "at least the issuer's own cluster"},
		{"local not listed", base + "  - {name: west}\n", `cluster "east" is not in clusters`},
		{"unnamed", base + "  - {attestor: dev}\n", "name is required"},
		{"bad attestor", base + "  - {name: east, attestor: oidc}\n", `attestor "oidc"`},
		{"jwks without issuer", base + "  - {name: east, attestor: jwks}\n", "jwks.issuer is required"},
		{"duplicate alias", base + "  - {name: east, aliases: [Kubernetes]}\n  - {name: west, aliases: [Kubernetes]}\n", `"Kubernetes" is used twice`},
		{"alias shadows a name", base + "  - {name: east}\n  - {name: west, aliases: [east]}\n", `"east" is used twice`},
		{"empty alias", base + "  - {name: east, aliases: [\"\"]}\n", "empty alias"},
		{"bad policy", base + "  - {name: east, policy: {deny: [kube-system]}}\n", "NAMESPACE/SERVICEACCOUNT"},
		{"unbound with jwks", base + "  - {name: east, attestor: jwks, jwks: {issuer: x}, allowUnboundTokens: true}\n", "tokenreview only"},
		{"context without kubeconfig", base + "  - {name: east, context: c}\n", "context needs a kubeconfig"},
		{"bad trust domain", "trustDomain: \"Not A TD\"\n" + base + "  - {name: east}\n", "trustDomain"},
		{"unknown field", base + "  - {name: east, audience: x}\n", `unknown field "clusters[0].audience"`},
		{"negative watch cap", "limits: {maxWatchesPerPeer: -1}\n" + base + "  - {name: east}\n", "negative max watches per peer"},
		{"negative idle", "limits: {maxConnectionIdle: -1m}\n" + base + "  - {name: east}\n", "negative max connection idle"},
		{"unknown limit", "limits: {maxStreams: 3}\n" + base + "  - {name: east}\n", `unknown field "limits.maxStreams"`},
		{"short intermediates", "intermediateTTL: 10s\n" + base + "  - {name: east}\n", "intermediateTTL 10s is below the minimum 30s"},
		{"negative intermediates", "intermediateTTL: -1h\n" + base + "  - {name: east}\n", "intermediateTTL -1h0m0s is below the minimum"},
		{"JWT default above max", "jwt: {defaultTTL: 2h}\n" + base + "  - {name: east}\n", "jwt: defaultTTL 2h0m0s exceeds maxTTL 1h0m0s"},
		{"negative JWT ttl", "jwt: {maxTTL: -1m}\n" + base + "  - {name: east}\n", "jwt: durations must not be negative"},
		{"JWT issuer not https", "jwt: {issuer: \"http://oidc.example\"}\n" + base + "  - {name: east}\n", "is not an https URL"},
		{"root configmaps without lease namespace", "istioRootConfigMaps: {enabled: true}\n" + base + "  - {name: east}\n", "istioRootConfigMaps: rootcm config: lease namespace is required"},
		{"root configmaps bad selector", "istioRootConfigMaps: {enabled: true, leaseNamespace: istio-system, selector: \"a in (\"}\n" + base + "  - {name: east}\n", "istioRootConfigMaps: rootcm config: selector"},
		{"intermediate with root.dir", "intermediate: {certFile: c, keyFile: k, rootFile: r}\nroot: {dir: /r}\n" + base + "  - {name: east}\n", "intermediate excludes root.dir and upstream"},
		{"intermediate with upstream", "intermediate: {certFile: c, keyFile: k, rootFile: r}\nupstream: {address: 'r:1', bundleFile: b}\n" + base + "  - {name: east}\n", "intermediate excludes root.dir and upstream"},
		{"intermediate without key", "intermediate: {certFile: c, rootFile: r}\n" + base + "  - {name: east}\n", "intermediate: plugged CA: key file is required"},
		{"intermediate without root", "intermediate: {certFile: c, keyFile: k, chainFile: ch}\n" + base + "  - {name: east}\n", "root file is required"},
		{"intermediate with intermediateTTL", "intermediate: {certFile: c, keyFile: k, rootFile: r}\nintermediateTTL: 1h\n" + base + "  - {name: east}\n", "intermediateTTL does not apply"},
		{"intermediate negative poll", "intermediate: {certFile: c, keyFile: k, rootFile: r, pollInterval: -1s}\n" + base + "  - {name: east}\n", "negative minimum life or poll interval"},
		{"root configmaps bad namespace", "istioRootConfigMaps: {enabled: true, leaseNamespace: istio-system, namespaces: [Bad_NS]}\n" + base + "  - {name: east}\n", `namespace "Bad_NS"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeValidated(defaultIssuerConfig, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestIssuerCacheTTLDefaults(t *testing.T) {
	for _, tc := range []struct {
		cl   clusterConfig
		want time.Duration
	}{
		{clusterConfig{Attestor: attestorTokenReview}, 10 * time.Second},
		{clusterConfig{Attestor: attestorJWKS}, 5 * time.Minute},
		{clusterConfig{Attestor: attestorTokenReview, Cache: cacheConfig{TTL: duration(time.Minute)}}, time.Minute},
	} {
		if got := tc.cl.cacheTTL(); got != tc.want {
			t.Errorf("%+v: cacheTTL = %v, want %v", tc.cl, got, tc.want)
		}
	}
}

// TestBuildAttestorOffline checks that an issuer can be wired while its
// clusters are unreachable: nothing contacts an API server at start.
func TestBuildAttestorOffline(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultIssuerConfig()
	cfg.DataDir = dir
	cfg.Cluster = "dev"
	cfg.Clusters = []clusterConfig{
		{Name: "dev", Attestor: attestorDev},
		{Name: "west", Kubeconfig: kubeconfig, Aliases: []string{"Kubernetes"}},
		{Name: "north", Attestor: attestorJWKS, Kubeconfig: kubeconfig, JWKS: jwksConfig{Issuer: "https://k"}},
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := buildAttestor(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
}

// upstreamPKI is mapped onto the stack over root.dir (its refusals are
// in TestIssuerUpstreamConfig).
func TestIssuerUpstreamPKIStack(t *testing.T) {
	base := "cluster: east\nclusters: [{name: east, attestor: dev}]\n"
	cfg := mustDecodeValidated(t, defaultIssuerConfig, base+stepUpstreamPKI+"root: {dir: /keys}\n")
	sc, err := issuerStack(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sc.UpstreamPKI == nil || sc.UpstreamPKI.Type != "stepcas" || sc.UpstreamPKI.StepCAS.Provisioner != "meshca" || sc.RootDir != "/keys" || sc.Upstream != nil {
		t.Errorf("stack config %+v: want the step-ca upstream PKI over root.dir", sc.UpstreamPKI)
	}
	cfg = defaultIssuerConfig()
	if err := decodeStrict([]byte(base), &cfg); err != nil {
		t.Fatal(err)
	}
	if sc, err := issuerStack(cfg); err != nil || sc.UpstreamPKI != nil {
		t.Errorf("without upstreamPKI: %v, upstream PKI %+v", err, sc.UpstreamPKI)
	}
}

// stepUpstreamPKI is a valid upstreamPKI: step-ca through a JWK provisioner.
var stepUpstreamPKI = "upstreamPKI: {type: stepcas, stepcas: {url: 'https://ca.example:9000', fingerprint: '" + strings.Repeat("ab", 32) +
	"', provisioner: meshca, provisionerType: jwk, keyFile: k.pem}}\n"
