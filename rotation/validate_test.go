package rotation

import (
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, map[string]testkit.Validator{
		"zero":          &Config{},
		"renewer":       &Config{Renewer: &fakeRenewer{}},
		"min above max": &Config{Renewer: &fakeRenewer{}, MinBackoff: time.Minute, MaxBackoff: time.Second},
	})
}
