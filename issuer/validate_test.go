package issuer_test

import (
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
)

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, map[string]testkit.Validator{
		"issuer zero":        &issuer.Config{},
		"issuer ttl bounds":  &issuer.Config{MinTTL: time.Hour, MaxTTL: time.Minute},
		"upstream zero":      &issuer.UpstreamConfig{},
		"upstream address":   &issuer.UpstreamConfig{Address: "root.example:8443", CredentialDir: t.TempDir()},
		"deny-list zero":     &issuer.DenyListConfig{},
		"deny-list cluster":  &issuer.DenyListConfig{Cluster: "c1", PollInterval: time.Minute},
		"admin zero":         &issuer.AdminConfig{},
		"crl signer zero":    &issuer.CRLSignerConfig{},
		"intermediates zero": &issuer.IntermediatesConfig{},
		"local root zero":    &issuer.LocalRootConfig{},
	})
}
