package grpclimit_test

import (
	"testing"

	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/testkit"
)

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, map[string]testkit.Validator{
		"config": &grpclimit.Config{},
	})
}
