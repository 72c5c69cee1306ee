package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/ca/upstream"
)

// issuerStack maps the issuer's YAML into the stack's config, defaults
// resolved, without changing the config it maps.
func TestIssuerStackMapping(t *testing.T) {
	base := "cluster: east\nclusters: [{name: east, attestor: dev}]\n"
	for _, tc := range []struct {
		name, yaml string
		check      func(t *testing.T, cfg issuerConfig)
	}{
		{"local root", base + "dataDir: /d\nroot: {dir: /r}\nintermediateTTL: 2h\n", func(t *testing.T, cfg issuerConfig) {
			sc, err := issuerStack(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if sc.Upstream != nil || sc.RootDir != "/r" || sc.IntermediateTTL != 2*time.Hour || sc.Name != "meshca issuer" {
				t.Errorf("stack = %+v", sc)
			}
			if sc.Retention == nil || sc.Checkpoint.DataDir != "/d" || sc.AdminSocket.Path != "" || sc.AdminSocket.Mode != 0 {
				t.Errorf("retention %+v, checkpoint %+v, admin socket %+v", sc.Retention, sc.Checkpoint, sc.AdminSocket)
			}
		}},
		{"upstream", base + "upstream: {address: 'r:15020', bundleFile: b.pem, joinTokenFile: t}\n", func(t *testing.T, cfg issuerConfig) {
			sc, err := issuerStack(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if u := sc.Upstream; u == nil || u.Address != "r:15020" || u.BundleFile != "b.pem" || u.JoinTokenFile != "t" {
				t.Errorf("upstream = %+v", sc.Upstream)
			}
		}},
		{"plugged intermediate", base + "intermediate: {certFile: /c/ca-cert.pem, keyFile: /c/ca-key.pem, chainFile: /c/cert-chain.pem, rootFile: /c/root-cert.pem, minRemaining: 48h}\n",
			func(t *testing.T, cfg issuerConfig) {
				sc, err := issuerStack(cfg)
				if err != nil {
					t.Fatal(err)
				}
				p := sc.Plugged
				if p == nil || p.Files.CertFile != "/c/ca-cert.pem" || p.Files.KeyFile != "/c/ca-key.pem" || p.Files.ChainFile != "/c/cert-chain.pem" ||
					p.Files.RootFile != "/c/root-cert.pem" || p.MinRemaining != 48*time.Hour || p.PollInterval != 0 || sc.Upstream != nil || sc.RootDir != "" {
					t.Errorf("stack = %+v, plugged = %+v", sc, p)
				}
			}},
		{"retention off, socket shared", base + "store: {retention: {disabled: true}}\nadminSocketAllow: {uids: [7]}\nadminSocket: /s\n", func(t *testing.T, cfg issuerConfig) {
			sc, err := issuerStack(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if sc.Retention != nil || sc.AdminSocket.Path != "/s" || sc.AdminSocket.Mode != 0o666 {
				t.Errorf("retention %+v, admin socket %+v", sc.Retention, sc.AdminSocket)
			}
		}},
		{"metrics listener", "cluster: east\nclusters: [{name: east, attestor: dev}, {name: west, attestor: dev}]\nmetricsListen: 127.0.0.1:9090\n", func(t *testing.T, cfg issuerConfig) {
			sc, err := issuerStack(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if sc.MetricsListen != "127.0.0.1:9090" || !slices.Equal(sc.Clusters, []string{"west"}) {
				t.Errorf("metrics listen = %q, other clusters = %q", sc.MetricsListen, sc.Clusters)
			}
		}},
		{"default attestor not written back", "cluster: east\nclusters: [{name: east}]\n", func(t *testing.T, cfg issuerConfig) {
			if cfg.Clusters[0].Attestor != "" || cfg.Clusters[0].attestor() != attestorTokenReview {
				t.Errorf("attestor %q, resolved %q", cfg.Clusters[0].Attestor, cfg.Clusters[0].attestor())
			}
			if got := cfg.Clusters[0].cacheTTL(); got != 10*time.Second {
				t.Errorf("cache TTL %v", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecodeValidated(t, defaultIssuerConfig, tc.yaml)
			tc.check(t, cfg)
		})
	}
}

// rootStack maps the root's YAML into the root stack's config: federation
// profiles and endpoint IDs default here, not in validate.
func TestRootStackMapping(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(t *testing.T, sc root.StackConfig)
	}{
		{"defaults", "", func(t *testing.T, sc root.StackConfig) {
			if _, ok := sc.Root.Keys.(root.FileKeys); !ok || sc.Endpoint != nil || len(sc.Federation) != 0 || !sc.Root.AutoRotate {
				t.Errorf("stack = %+v", sc)
			}
			if !sc.BundleTrustDomain.IsZero() || sc.AdminSocketPath() != ".meshca-root/admin.sock" {
				t.Errorf("bundle trust domain %v, admin socket %s", sc.BundleTrustDomain, sc.AdminSocketPath())
			}
		}},
		{"federation", "federation:\n  listen: ':8443'\n  trustDomain: a.example\n  federatesWith: [{trustDomain: b.example, url: 'https://b', bundleFile: b.json}, {trustDomain: c.example, url: 'https://c', profile: https_web}]\n",
			func(t *testing.T, sc root.StackConfig) {
				if e := sc.Endpoint; e == nil || e.Profile != federation.ProfileHTTPSSPIFFE || e.TrustDomain.Name() != "a.example" {
					t.Errorf("endpoint = %+v", sc.Endpoint)
				}
				if len(sc.Federation) != 2 || sc.Federation[0].EndpointSPIFFEID.String() != "spiffe://b.example/meshca/bundle-endpoint" ||
					sc.Federation[1].Profile != federation.ProfileHTTPSWeb || !sc.Federation[1].EndpointSPIFFEID.IsZero() {
					t.Errorf("federation = %+v", sc.Federation)
				}
				if sc.BundleTrustDomain.Name() != "a.example" || len(sc.Root.TrustDomains) != 1 {
					t.Errorf("bundle trust domain %v, trust domains %v", sc.BundleTrustDomain, sc.Root.TrustDomains)
				}
			}},
		{"upstream stepcas jwk", "upstream:\n  type: stepcas\n  ttl: 720h\n  stepcas: {url: 'https://ca.example:9000', fingerprint: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, provisioner: meshca, provisionerType: jwk, keyFile: /etc/p.key}\n",
			func(t *testing.T, sc root.StackConfig) {
				want := upstream.Config{Type: upstream.TypeStepCAS, TTL: 720 * time.Hour, StepCAS: upstream.StepCAS{
					URL: "https://ca.example:9000", Fingerprint: strings.Repeat("a", 64), Provisioner: "meshca",
					ProvisionerType: upstream.ProvisionerJWK, KeyFile: "/etc/p.key"}}
				if sc.Upstream != want {
					t.Errorf("upstream = %+v, want %+v", sc.Upstream, want)
				}
			}},
		{"upstream stepcas x5c", "upstream:\n  type: stepcas\n  stepcas: {url: 'https://ca.example', fingerprint: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, provisioner: x, provisionerType: x5c, keyFile: k.pem, certFile: c.pem, passwordFile: pw}\n",
			func(t *testing.T, sc root.StackConfig) {
				s := sc.Upstream.StepCAS
				if sc.Upstream.Type != upstream.TypeStepCAS || s.CertFile != "c.pem" || s.KeyFile != "k.pem" || s.PasswordFile != "pw" || s.ProvisionerType != "x5c" {
					t.Errorf("upstream = %+v", sc.Upstream)
				}
			}},
		{"upstream vaultpki", "upstream:\n  type: vaultpki\n  vaultpki: {address: 'https://vault:8200', mount: pki-mesh, issuer: corp, caCertFile: ca.pem, auth: {method: approle, roleID: r, secretIDFile: s}}\n",
			func(t *testing.T, sc root.StackConfig) {
				v := sc.Upstream.VaultPKI
				if sc.Upstream.Type != upstream.TypeVaultPKI || v.Address != "https://vault:8200" || v.Mount != "pki-mesh" || v.Issuer != "corp" ||
					v.CACertFile != "ca.pem" || v.Auth.Method != "approle" || v.Auth.AppRole.RoleID != "r" || v.Auth.AppRole.SecretIDFile != "s" {
					t.Errorf("upstream = %+v", sc.Upstream)
				}
			}},
		{"upstream cloudcas", "upstream:\n  type: cloudcas\n  cloudcas: {certificateAuthority: projects/p/locations/l/caPools/pool/certificateAuthorities/ca, credentialsFile: sa.json}\n",
			func(t *testing.T, sc root.StackConfig) {
				c := sc.Upstream.CloudCAS
				if sc.Upstream.Type != upstream.TypeCloudCAS || c.CredentialsFile != "sa.json" || c.CertificateAuthority != "projects/p/locations/l/caPools/pool/certificateAuthorities/ca" {
					t.Errorf("upstream = %+v", sc.Upstream)
				}
			}},
		{"short propagation delay", "rotation: {propagationDelay: 2s, auto: false}\n", func(t *testing.T, sc root.StackConfig) {
			if sc.Root.PropagationDelay != 2*time.Second || sc.Root.AutoRotate {
				t.Errorf("root = %+v", sc.Root)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecodeValidated(t, defaultRootConfig, tc.yaml)
			before := cfg.Federation.Profile
			sc, err := rootStack(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Federation.Profile != before || cfg.Key.Kind != "" && cfg.Key.Kind != rootKeyFile {
				t.Errorf("config changed by the mapping")
			}
			tc.check(t, sc)
		})
	}
}

// A root config with a bad upstream is refused with the reason.
func TestRootUpstreamValidated(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"vaultcas":          {"upstream: {type: vaultcas}\n", "pki/sign/ROLE"},
		"no type":           {"upstream: {ttl: 720h}\n", "without a type"},
		"short ttl":         {"upstream: {type: cloudcas, ttl: 1h, cloudcas: {certificateAuthority: projects/p/locations/l/caPools/x/certificateAuthorities/y}}\n", "ttl"},
		"http url":          {"upstream: {type: stepcas, stepcas: {url: 'http://ca', fingerprint: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, provisioner: p, provisionerType: jwk, keyFile: k}}\n", "https"},
		"bad cloud ca name": {"upstream: {type: cloudcas, cloudcas: {certificateAuthority: my-ca}}\n", "certificateAuthority"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeValidated(defaultRootConfig, tc.yaml); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// metricsListen must be host:port; empty (the default) means none.
func TestIssuerMetricsListenValidated(t *testing.T) {
	_, err := decodeValidated(defaultIssuerConfig, "cluster: east\nclusters: [{name: east, attestor: dev}]\nmetricsListen: localhost\n")
	if err == nil || !strings.Contains(err.Error(), "metricsListen") {
		t.Fatalf("validate = %v, want a metricsListen error", err)
	}
}
