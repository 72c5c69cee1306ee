package main

import (
	"slices"
	"testing"
)

func TestFetchTargetMatchesTheServingNames(t *testing.T) {
	defaults := defaultDevConfig().Hosts
	tests := []struct {
		addr       string
		hosts      []string
		issuer     string
		serverName string
	}{
		{"127.0.0.1:8443", defaults, "127.0.0.1:8443", ""},
		{"[::1]:8443", defaults, "[::1]:8443", ""},
		{"0.0.0.0:8443", defaults, "127.0.0.1:8443", ""},
		{"[::]:8443", []string{"localhost"}, "localhost:8443", ""},
		{"127.0.0.1:8443", []string{"meshca.test"}, "127.0.0.1:8443", "meshca.test"},
		{"[::]:8443", []string{"meshca.test"}, "[::]:8443", "meshca.test"},
	}
	for _, tt := range tests {
		issuer, serverName := fetchTarget(tt.addr, tt.hosts)
		if issuer != tt.issuer || serverName != tt.serverName {
			t.Errorf("fetchTarget(%q, %q) = %q, %q; want %q, %q", tt.addr, tt.hosts, issuer, serverName, tt.issuer, tt.serverName)
		}
	}
}

func TestHostFlagAddsToHosts(t *testing.T) {
	got := addHosts([]string{"127.0.0.1", "localhost"}, []string{"meshca.test", "localhost"})
	want := []string{"127.0.0.1", "localhost", "meshca.test"}
	if !slices.Equal(got, want) {
		t.Fatalf("addHosts = %q, want %q", got, want)
	}
}
