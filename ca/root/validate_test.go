package root

import (
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, map[string]testkit.Validator{
		"config": &Config{},
	})
}
