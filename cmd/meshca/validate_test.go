package main

import (
	"reflect"
	"testing"
)

// TestValidateKeepsConfig: the command's validate methods only report;
// defaults are resolved where the config is mapped into component configs.
// Each config is decoded twice from the same YAML, one copy is validated,
// and the two must still be equal (slices, maps and pointers included).
func TestValidateKeepsConfig(t *testing.T) {
	issuerYAML := `
trustDomain: example.org
cluster: east
hosts: [localhost]
intermediateTTL: 2h
jwt: {defaultTTL: 1m, maxTTL: 10m, issuer: "https://oidc.example"}
upstream: {address: "root:15020", bundleFile: bundle.pem}
admin: {listen: "127.0.0.1:0", spiffeIDs: ["spiffe://example.org/admin"]}
revocation: {pollInterval: 1s}
limits: {maxConnections: 10}
store: {dsn: "postgres://x/y", retention: {grace: 1h}}
clusters:
- name: east
  aliases: [e]
  attestor: jwks
  jwks: {issuer: "https://issuer.example"}
  cache: {size: 5, ttl: 1m}
  policy: {allow: ["default/*"], deny: ["default/bad"]}
- name: west
`
	rootYAML := `
dataDir: /var/lib/meshca
hosts: [localhost]
rootTTL: 1000h
intermediateTTL: 100h
rotation: {auto: false, propagationDelay: 1h}
key: {kind: vault, vault: {address: "https://vault:8200", keyPrefix: meshca, auth: {method: token, tokenFile: t}}}
admin: {listen: "127.0.0.1:0", spiffeIDs: ["spiffe://example.org/admin"]}
federation:
  listen: "127.0.0.1:0"
  trustDomain: example.org
  oidc: {issuerURL: "https://oidc.example.org/mesh"}
  federatesWith:
  - {trustDomain: other.example, url: "https://other.example/bundle", bundleFile: other.pem}
`
	for _, tc := range []struct {
		name string
		yaml string
		new  func() any
		call func(any) error
	}{
		{"issuer", issuerYAML, func() any { c := defaultIssuerConfig(); return &c }, func(c any) error { return c.(*issuerConfig).validate() }},
		{"issuer defaults", "", func() any { c := defaultIssuerConfig(); return &c }, func(c any) error { return c.(*issuerConfig).validate() }},
		{"root", rootYAML, func() any { c := defaultRootConfig(); return &c }, func(c any) error { return c.(*rootConfig).validate() }},
		{"root defaults", "", func() any { c := defaultRootConfig(); return &c }, func(c any) error { return c.(*rootConfig).validate() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			validated, untouched := tc.new(), tc.new()
			for _, c := range []any{validated, untouched} {
				if err := decodeStrict([]byte(tc.yaml), c); err != nil {
					t.Fatal(err)
				}
			}
			if !reflect.DeepEqual(validated, untouched) {
				t.Fatal("two decodings of the same YAML differ")
			}
			if err := tc.call(validated); err != nil && tc.yaml != "" {
				t.Errorf("validate: %v (the example should pass, so that every check runs)", err)
			}
			if !reflect.DeepEqual(validated, untouched) {
				t.Errorf("validate changed the config:\nbefore %+v\nafter  %+v", untouched, validated)
			}
		})
	}
}
