package main

import (
	"path/filepath"
	"testing"
)

// validator is a serving command's configuration: issuerConfig or rootConfig.
type validator interface{ validate() error }

// decodeValidated does what `meshca issuer serve` and `meshca root serve` do
// with a configuration: yaml decoded strictly over the command's defaults,
// then validate. It returns the first error of the two.
func decodeValidated[C validator](defaults func() C, yaml string) (C, error) {
	cfg := defaults()
	if err := decodeStrict([]byte(yaml), &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

// loadValidated is decodeValidated for the file at path.
func loadValidated[C validator](defaults func() C, path string) (C, error) {
	cfg := defaults()
	if err := loadConfig(path, &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

// mustDecodeValidated is decodeValidated for a configuration the test
// holds valid: an error fails the test.
func mustDecodeValidated[C validator](t *testing.T, defaults func() C, yaml string) C {
	t.Helper()
	cfg, err := decodeValidated(defaults, yaml)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// checkExampleConfigs loads and validates every file matching pattern, of
// which there must be at least min, so that documented configurations
// cannot rot.
func checkExampleConfigs[C validator](t *testing.T, pattern string, min int, defaults func() C) {
	t.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil || len(paths) < min {
		t.Fatalf("example configs: %v %v", paths, err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if _, err := loadValidated(defaults, p); err != nil {
				t.Fatal(err)
			}
		})
	}
}
