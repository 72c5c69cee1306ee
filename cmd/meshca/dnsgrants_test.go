package main

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestDNSGrants(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	names := []string{"istiod.istio-system.svc"}
	got, err := dnsGrants([]dnsGrantConfig{
		{Namespace: "istio-system", ServiceAccount: "istiod", DNSNames: names},
		{SPIFFEID: "spiffe://cluster.local/ns/istio-system/sa/istiod-west", Cluster: "west", DNSNames: []string{"istiod-remote.istio-system.svc"}},
	}, td)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].SPIFFEID.String() != "spiffe://cluster.local/ns/istio-system/sa/istiod" || got[1].Cluster != "west" {
		t.Errorf("grants %+v", got)
	}
	for _, tc := range []struct {
		cfg  dnsGrantConfig
		want string
	}{
		{dnsGrantConfig{SPIFFEID: "spiffe://cluster.local/ns/a/sa/b", Namespace: "a", DNSNames: names}, "not both"},
		{dnsGrantConfig{Namespace: "a", DNSNames: names}, "are required"},
		{dnsGrantConfig{SPIFFEID: "not a spiffe id", DNSNames: names}, "identity"},
		{dnsGrantConfig{Namespace: "a", ServiceAccount: "b", DNSNames: []string{"*.a.svc"}}, "wildcards"},
	} {
		if _, err := dnsGrants([]dnsGrantConfig{tc.cfg}, td); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
