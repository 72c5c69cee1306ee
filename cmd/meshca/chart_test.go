package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/meshca/meshca/test/chart"
)

// TestChartConfigs renders the Helm chart with each of its tested value
// sets and loads the meshca configurations it puts in ConfigMaps with the
// loader and checks `meshca issuer serve` and `meshca root serve` use:
// strict YAML, then validate. A chart that renders a key meshca does not
// know, or a value it refuses, fails here rather than in a crash-looping
// pod.
func TestChartConfigs(t *testing.T) {
	for name, args := range chart.ValueSets {
		t.Run(name, func(t *testing.T) {
			configs, err := chart.Configs(args...)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := configs["issuer.yaml"]; !ok {
				t.Fatalf("no issuer.yaml rendered; got %d configs", len(configs))
			}
			dir := t.TempDir()
			for file, data := range configs {
				path := filepath.Join(dir, file)
				if err := os.WriteFile(path, data, 0o600); err != nil {
					t.Fatal(err)
				}
				switch file {
				case "issuer.yaml":
					if _, err := loadValidated(defaultIssuerConfig, path); err != nil {
						t.Fatalf("issuer.yaml: %v\n%s", err, data)
					}
				case "root.yaml":
					if _, err := loadValidated(defaultRootConfig, path); err != nil {
						t.Fatalf("root.yaml: %v\n%s", err, data)
					}
				}
			}
		})
	}
	// The loader refuses what the schema would let through extraConfig.
	configs, err := chart.Configs("--set", "issuer.extraConfig.leafTTLs=1h")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "issuer.yaml")
	if err := os.WriteFile(path, configs["issuer.yaml"], 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultIssuerConfig()
	if err := loadConfig(path, &cfg); err == nil {
		t.Error("an unknown key in issuer.extraConfig was loaded")
	}
}
