package attest

import (
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, map[string]testkit.Validator{
		"cache":         &CacheConfig{},
		"jwks":          &JWKSConfig{},
		"remote keys":   &RemoteKeysConfig{},
		"multi-cluster": &MultiClusterConfig{},
		"policy":        &PolicyConfig{},
		"tokenreview":   &TokenReviewConfig{},
		"kube client":   &KubeClientConfig{},
	})
}
