package agentcmd

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/agent"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
)

func TestAgentConfigFile(t *testing.T) {
	dir := t.TempDir()
	full := `issuer: 127.0.0.1:8443
caBundle: /b.pem
tokenFile: /t
clusterID: east
keyType: rsa-2048
ttl: 30m
sdsSocket: /run/sds.sock
workloadSocket: /run/spiffe.sock
workloadSocketMode: "0660"
workloadSocketGroup: "1337"
workloadAllowedUIDs: "1000, 1337"
workloadAllowedGIDs: "1337"
sdsAllowedUIDs: "1337"
sdsAllowedGIDs: "1338"
maxConnections: 16
maxStreamsPerConnection: 32
maxStreams: 64
spiffeID: spiffe://cluster.local/ns/default/sa/web
outDir: /out
healthAddr: 127.0.0.1:9000
shutdownTimeout: 2s
`
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{"every field", full, ""},
		{"unknown field", "issuer: a:1\nbogus: 1\n", `unknown field "bogus"`},
		{"dev field", "issuer: a:1\nleafTTL: 1h\n", `unknown field "leafTTL"`},
		{"wrong case", "issuer: a:1\ncabundle: /b\n", `unknown field "cabundle"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := defaultAgentConfig()
			err := cliconfig.Load(path, &cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ac, err := cfg.agentConfig(slog.Default())
			if err != nil {
				t.Fatal(err)
			}
			if ac.IssuerAddress != "127.0.0.1:8443" || ac.ClusterID != "east" || ac.TTL != 30*time.Minute ||
				ac.WorkloadSocketMode != 0o660 || ac.OutputDir != "/out" || ac.HealthAddr != "127.0.0.1:9000" ||
				ac.ShutdownTimeout != 2*time.Second || ac.KeyType != "rsa-2048" || ac.SDSSocket != "/run/sds.sock" {
				t.Errorf("decoded %+v", ac)
			}
			if ac.WorkloadSocketGroup != "1337" || fmt.Sprint(ac.WorkloadPeers) != "{[1000 1337] [1337]}" || fmt.Sprint(ac.SDSPeers) != "{[1337] [1338]}" ||
				ac.Limits != (agent.StreamLimits{MaxConnections: 16, MaxStreamsPerConnection: 32, MaxStreams: 64}) ||
				ac.SPIFFEID.String() != "spiffe://cluster.local/ns/default/sa/web" {
				t.Errorf("decoded socket settings %+v", ac)
			}
		})
	}
}

func TestAgentConfigValidation(t *testing.T) {
	base := agentConfig{Issuer: "127.0.0.1:1", CABundle: "/b", TokenFile: "/t", SDSSocket: "/s"}
	for _, tc := range []struct {
		name    string
		edit    func(*agentConfig)
		wantErr string
	}{
		{"valid", func(*agentConfig) {}, ""},
		{"no issuer", func(c *agentConfig) { c.Issuer = "" }, "issuer address is required"},
		{"no bundle", func(c *agentConfig) { c.CABundle = "" }, "CA bundle file is required"},
		{"no token", func(c *agentConfig) { c.TokenFile = "" }, "token file is required"},
		{"nothing served", func(c *agentConfig) { c.SDSSocket = "" }, "nothing to serve"},
		{"same sockets", func(c *agentConfig) { c.WorkloadSocket = "/s" }, "must be different"},
		{"bad key type", func(c *agentConfig) { c.KeyType = "dsa" }, "unknown key type"},
		{"bad mode", func(c *agentConfig) { c.WorkloadSocketMode = "rw" }, "octal"},
		{"mode too wide", func(c *agentConfig) { c.WorkloadSocketMode = "4777" }, "octal"},
		{"bad health addr", func(c *agentConfig) { c.HealthAddr = "8089" }, "health address"},
		{"group by name", func(c *agentConfig) { c.WorkloadSocketGroup = "wheel" }, "numeric gid"},
		{"bad uid", func(c *agentConfig) { c.WorkloadAllowedUIDs = "1000,root" }, "workloadAllowedUIDs"},
		{"negative gid", func(c *agentConfig) { c.SDSAllowedGIDs = "-1" }, "sdsAllowedGIDs"},
		{"negative limit", func(c *agentConfig) { c.MaxStreams = -1 }, "must not be negative"},
		{"bad spiffe id", func(c *agentConfig) { c.SPIFFEID = "https://web" }, "spiffeID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			_, err := c.agentConfig(slog.Default())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestAgentFlagsOverrideFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("issuer: file:1\ncaBundle: /file.pem\ntokenFile: /t\nsdsSocket: /s\nttl: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := defaultAgentConfig()
	flags.Issuer, flags.TTL, flags.HealthAddr, flags.CABundle = "flag:2", cliconfig.Duration(5*time.Minute), "", "/flag-default.pem"
	changed := map[string]bool{"issuer": true, "ttl": true, "health-addr": true}
	got, err := mergeAgentConfig(flags, path, func(name string) bool { return changed[name] })
	if err != nil {
		t.Fatal(err)
	}
	want := agentConfig{Issuer: "flag:2", CABundle: "/file.pem", TokenFile: "/t", SDSSocket: "/s", TTL: cliconfig.Duration(5 * time.Minute), KeyType: "ec-p256"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %+v, want %+v", got, want)
	}
	if noFile, _ := mergeAgentConfig(flags, "", nil); !reflect.DeepEqual(noFile, flags) {
		t.Errorf("without a file: %+v, want the flags %+v", noFile, flags)
	}
}

// --dns-name replaces the file's dnsNames; without it the file's stay.
func TestAgentDNSNamesFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("issuer: i:1\ncaBundle: /b\ntokenFile: /t\noutDir: /o\ndnsNames: [istiod.istio-system.svc]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := defaultAgentConfig()
	flags.DNSNames = []string{"istiod-remote.istio-system.svc"}
	for _, tc := range []struct {
		changed bool
		want    []string
	}{
		{false, []string{"istiod.istio-system.svc"}},
		{true, []string{"istiod-remote.istio-system.svc"}},
	} {
		got, err := mergeAgentConfig(flags, path, func(name string) bool { return tc.changed && name == "dns-name" })
		if err != nil {
			t.Fatal(err)
		}
		acfg, err := got.agentConfig(slog.Default())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(acfg.DNSNames, tc.want) {
			t.Errorf("flag changed %v: DNS names %q, want %q", tc.changed, acfg.DNSNames, tc.want)
		}
	}
	bad := defaultAgentConfig()
	bad.Issuer, bad.CABundle, bad.TokenFile, bad.OutDir = "i:1", "/b", "/t", "/o"
	for _, names := range [][]string{{"*.istio-system.svc"}, {"a.svc", "a.svc"}, {"10.0.0.1"}} {
		bad.DNSNames = names
		if _, err := bad.agentConfig(slog.Default()); err == nil {
			t.Errorf("DNS names %q accepted", names)
		}
	}
}
