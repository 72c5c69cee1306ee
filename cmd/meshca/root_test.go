package main

import (
	"strings"
	"testing"

	"github.com/meshca/meshca/ca/root"
)

// TestRootExampleConfigs decodes and validates deploy/examples/root*.yaml.
func TestRootExampleConfigs(t *testing.T) {
	checkExampleConfigs(t, "../../deploy/examples/root*.yaml", 2, defaultRootConfig)
}

func TestRootConfigValidate(t *testing.T) {
	vault := "key:\n  kind: vault\n  vault:\n    address: https://vault:8200\n    auth: {method: token, tokenFile: /t}\n"
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"bad key kind", "key: {kind: hsm}\n", `key.kind "hsm"`},
		{"vault without address", "key: {kind: vault}\n", "key.vault: vault: address is required"},
		{"vault bad key prefix", "key:\n  kind: vault\n  vault: {address: https://v:8200, keyPrefix: 'vault:', auth: {method: token, tokenFile: /t}}\n", `key.vault.keyPrefix "vault:"`},
		{"vault bad auth", "key:\n  kind: vault\n  vault: {address: https://v:8200, auth: {method: ldap}}\n", `unknown method "ldap"`},
		{"negative ttl", "intermediateTTL: -1h\n", "intermediateTTL is negative"},
		{"intermediate outlives root", "rootTTL: 24h\nintermediateTTL: 48h\n", "shorter than rootTTL"},
		{"no hosts", "hosts: []\n", "hosts"},
		{"federation without td", "federation: {listen: ':8443'}\n", "federation.trustDomain"},
		{"web without cert", "federation: {listen: ':8443', trustDomain: a.example, profile: https_web}\n", "certFile and keyFile"},
		{"relationship without bundle", "federation:\n  federatesWith: [{trustDomain: b.example, url: 'https://b'}]\n", "needs bundleFile"},
		{"relationship without url", "federation:\n  federatesWith: [{trustDomain: b.example, profile: https_web}]\n", "url is required"},
		{"relationship twice", "federation:\n  federatesWith: [{trustDomain: b.example, url: 'https://b', profile: https_web}, {trustDomain: b.example, url: 'https://c', profile: https_web}]\n", "listed twice"},
		{"oidc without endpoint", "federation: {oidc: {issuerURL: 'https://oidc.a.example'}}\n", "needs federation.listen"},
		{"oidc over http", "federation: {listen: ':8443', trustDomain: a.example, oidc: {issuerURL: 'http://oidc.a.example'}}\n", "federation.oidc.issuerURL"},
		{"unknown field", "key: {kind: file, path: /x}\n", `unknown field "key.path"`},
		{"bad store", "store: {driver: mysql}\n", "mysql"},
		{"adopt without key file", "adoptRoot: {certFile: /r/ca-cert.pem}\n", "adoptRoot: certFile and keyFile are required"},
		{"adopt with vault keys", vault + "adoptRoot: {certFile: /r/ca-cert.pem, keyFile: /r/ca-key.pem}\n", "adoptRoot needs key.kind file"},
		{"adopt under upstream", "upstream: {type: stepcas, stepcas: {url: 'https://ca:9000', fingerprint: ab, provisioner: p, provisionerType: jwk}}\n" +
			"adoptRoot: {certFile: /r/ca-cert.pem, keyFile: /r/ca-key.pem}\n", "adoptRoot and upstream exclude each other"},
		{"negative connection cap", "limits: {maxConnections: -5}\n", "negative max connections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeValidated(defaultRootConfig, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
	cfg := defaultRootConfig()
	if err := decodeStrict([]byte(vault), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Errorf("valid vault config: %v", err)
	}
	if got := cfg.vaultConfig("k").KeyName; got != "k" {
		t.Errorf("vault key name %q", got)
	}
	// Without keyPrefix, keys are named after the documented default.
	if keys, ok := cfg.keys().(root.VaultKeys); !ok || keys.Prefix != root.DefaultVaultKeyName ||
		keys.Config.KeyName != root.DefaultVaultKeyName {
		t.Errorf("vault keys without keyPrefix: %+v, want prefix %s", cfg.keys(), root.DefaultVaultKeyName)
	}
}

func TestIssuerUpstreamConfig(t *testing.T) {
	base := "cluster: east\nclusters: [{name: east, attestor: dev}]\n"
	for _, tc := range []struct{ name, yaml, wantErr string }{
		{"no bundle", base + "upstream: {address: 'r:15020'}\n", "upstream.bundleFile is required"},
		{"root dir too", base + "root: {dir: /x}\nupstream: {address: 'r:15020', bundleFile: b.pem}\n", "exclusive"},
		{"no address", base + "upstream: {bundleFile: b.pem}\n", "upstream.address is required"},
		// upstreamPKI certifies the standalone issuer's own root key.
		{"upstreamPKI with the central root", base + stepUpstreamPKI + "upstream: {address: 'r:15020', bundleFile: b.pem}\n",
			"upstreamPKI and upstream exclude each other"},
		{"upstreamPKI with a plugged intermediate", base + stepUpstreamPKI + "intermediate: {certFile: c, keyFile: k, rootFile: r}\n",
			"upstreamPKI and intermediate exclude each other"},
		{"upstreamPKI options without a type", base + "upstreamPKI: {ttl: 48h}\n", "upstreamPKI: upstream: options given without a type"},
		{"upstreamPKI vaultcas", base + "upstreamPKI: {type: vaultcas}\n", "upstreamPKI: upstream: type vaultcas cannot issue"},
		{"upstreamPKI short ttl", base + "upstreamPKI: {type: cloudcas, ttl: 1h, cloudcas: {certificateAuthority: x}}\n", "upstreamPKI: upstream: ttl 1h0m0s"},
		{"upstreamPKI stepcas without fingerprint",
			base + "upstreamPKI: {type: stepcas, stepcas: {url: 'https://ca.example', provisioner: p, provisionerType: jwk, keyFile: k}}\n",
			"upstreamPKI: upstream stepcas: fingerprint"},
		{"upstreamPKI unknown field", base + "upstreamPKI: {type: stepcas, stepcas: {address: x}}\n", `unknown field "upstreamPKI.stepcas.address"`},
	} {
		_, err := decodeValidated(defaultIssuerConfig, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.wantErr)
		}
	}
}
