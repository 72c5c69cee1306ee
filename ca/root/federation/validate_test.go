package federation

import (
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestValidateKeepsConfig(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("b.example")
	testkit.ValidateKeepsConfig(t, map[string]testkit.Validator{
		"fetcher zero":       &FetcherConfig{},
		"fetcher bad bounds": &FetcherConfig{MinRefreshInterval: time.Hour, MaxRefreshInterval: time.Minute},
		"endpoint zero":      &EndpointConfig{},
		"endpoint web":       &EndpointConfig{TrustDomain: td, Source: &fakeSource{}, Profile: ProfileHTTPSWeb, CertFile: "c", KeyFile: "k"},
	})
}
