package agent

import (
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, map[string]testkit.Validator{
		"agent zero":            &Config{},
		"agent output dir":      &Config{IssuerAddress: "issuer:8443", CABundleFile: "ca.pem", TokenFile: "token", OutputDir: t.TempDir()},
		"manager zero":          &ManagerConfig{},
		"manager files":         &ManagerConfig{TokenFile: "token", CABundleFile: "ca.pem", TTL: time.Hour},
		"bundle watcher zero":   &BundleWatcherConfig{},
		"bundle watcher ranged": &BundleWatcherConfig{RetryMin: time.Minute, RetryMax: time.Second},
		"workload zero":         &WorkloadConfig{},
		"sds zero":              &SDSConfig{},
	})
}
