package main

import (
	"slices"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// configReference is the configuration reference the tests hold the code to.
const configReference = "../../docs/reference/config.md"

// TestConfigReference holds each component's section of the configuration
// reference to its config struct: a field in the code that the reference
// lacks, or a documented field the code lacks, fails.
func TestConfigReference(t *testing.T) {
	for _, tc := range []struct {
		name, heading string
		cfg           any
	}{
		{"dev", "Dev (`meshca dev`)", devConfig{}},
		{"issuer", "Issuer (`meshca issuer serve`)", issuerConfig{}},
		{"root", "Root (`meshca root serve`)", rootConfig{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := testkit.ConfigFieldNames(tc.cfg)
			doc := testkit.DocTableKeys(t, configReference, tc.heading)
			testkit.SameNames(t, "config reference, "+tc.name, code, doc)
		})
	}
}

// TestConfigFieldNames checks the walk the reference test relies on, so that
// a walk finding nothing cannot make the reference test pass vacuously.
func TestConfigFieldNames(t *testing.T) {
	names := testkit.ConfigFieldNames(issuerConfig{})
	for _, want := range []string{"dataDir", "store.retention.grace", "clusters[].policy.deny", "upstream.joinTokenFile"} {
		if !slices.Contains(names, want) {
			t.Errorf("ConfigFieldNames(issuerConfig) lacks %q: %v", want, names)
		}
	}
	root := testkit.ConfigFieldNames(rootConfig{})
	if !slices.Contains(root, "rotation.auto") || !slices.Contains(root, "federation.federatesWith[].url") {
		t.Errorf("ConfigFieldNames(rootConfig) misses pointer or list fields: %v", root)
	}
}
