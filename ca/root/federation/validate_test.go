package federation

import (
	"reflect"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestValidateDoesNotChangeConfig checks that Validate leaves defaults to
// the constructors: a config that passes or fails is the same afterwards.
func TestValidateDoesNotChangeConfig(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("b.example")
	for _, tc := range []struct {
		name string
		cfg  interface{ Validate() error }
	}{
		{"fetcher zero", &FetcherConfig{}},
		{"fetcher bad bounds", &FetcherConfig{MinRefreshInterval: time.Hour, MaxRefreshInterval: time.Minute}},
		{"endpoint zero", &EndpointConfig{}},
		{"endpoint web", &EndpointConfig{TrustDomain: td, Source: &fakeSource{}, Profile: ProfileHTTPSWeb, CertFile: "c", KeyFile: "k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := reflect.ValueOf(tc.cfg).Elem().Interface()
			_ = tc.cfg.Validate()
			if after := reflect.ValueOf(tc.cfg).Elem().Interface(); !reflect.DeepEqual(before, after) {
				t.Errorf("Validate changed the config:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}
