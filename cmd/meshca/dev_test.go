package main

import (
	"slices"
	"testing"

	"github.com/spf13/cobra"
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

// --metrics-listen overrides the config file's metricsListen, and reaches
// the stack; without either there is no operations listener.
func TestMetricsListenFlag(t *testing.T) {
	if newDevCommand().Flags().Lookup("metrics-listen") == nil {
		t.Fatal("meshca dev has no --metrics-listen flag")
	}
	for _, tt := range []struct {
		name string
		args []string
		file string
		want string
	}{
		{"none", nil, "", ""},
		{"file", nil, "metricsListen: 127.0.0.1:9090\n", "127.0.0.1:9090"},
		{"flag over file", []string{"--metrics-listen", "127.0.0.1:9191"}, "metricsListen: 127.0.0.1:9090\n", "127.0.0.1:9191"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &cobra.Command{}
			flagCfg := defaultDevConfig()
			cmd.Flags().StringVar(&flagCfg.MetricsListen, "metrics-listen", "", "")
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			fileCfg := defaultDevConfig()
			if err := decodeStrict([]byte(tt.file+"cluster: dev\n"), &fileCfg); err != nil {
				t.Fatal(err)
			}
			applyChangedFlags(cmd, &fileCfg, flagCfg)
			sc, err := devStack(fileCfg)
			if err != nil {
				t.Fatal(err)
			}
			if sc.MetricsListen != tt.want {
				t.Fatalf("stack metrics listen = %q, want %q", sc.MetricsListen, tt.want)
			}
		})
	}
}
