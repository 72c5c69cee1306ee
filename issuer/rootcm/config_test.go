package rootcm_test

import (
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/rootcm"
)

func TestConfigValidate(t *testing.T) {
	client := fake.NewClientset()
	ok := func() rootcm.Config {
		return rootcm.Config{Client: client, LeaseNamespace: "istio-system", Identity: "issuer-0"}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*rootcm.Config)
		wantErr string
	}{
		{"minimal", func(*rootcm.Config) {}, ""},
		{"full", func(c *rootcm.Config) {
			c.Namespaces = []string{"a", "b"}
			c.Selector = "istio-injection=enabled"
			c.Name, c.Key, c.LeaseName = "roots", "ca.crt", "lease"
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 3*time.Second, 2*time.Second, time.Second
		}, ""},
		{"no client", func(c *rootcm.Config) { c.Client = nil }, "client is required"},
		{"no lease namespace", func(c *rootcm.Config) { c.LeaseNamespace = "" }, "lease namespace is required"},
		{"no identity", func(c *rootcm.Config) { c.Identity = "" }, "identity is required"},
		{"bad namespace", func(c *rootcm.Config) { c.Namespaces = []string{"Not_A_NS"} }, `namespace "Not_A_NS"`},
		{"bad selector", func(c *rootcm.Config) { c.Selector = "a in (" }, "selector"},
		{"bad name", func(c *rootcm.Config) { c.Name = "UPPER" }, `name "UPPER"`},
		{"bad key", func(c *rootcm.Config) { c.Key = "a/b" }, `key "a/b"`},
		{"negative", func(c *rootcm.Config) { c.RetryPeriod = -time.Second }, "must not be negative"},
		{"renew not below lease", func(c *rootcm.Config) { c.LeaseDuration = 5 * time.Second; c.RenewDeadline = 5 * time.Second }, "lease duration"},
		{"retry not below renew against defaults", func(c *rootcm.Config) { c.RetryPeriod = time.Minute }, "renew deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.edit(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if _, err := rootcm.New(c); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
			}
			if _, err := rootcm.New(c); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
	c := ok()
	c.Namespaces = []string{"b", "a"}
	testkit.ValidateKeepsConfig(t, &c)
}
