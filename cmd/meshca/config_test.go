package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr string
		check   func(devConfig) bool
	}{
		{"valid", "listen: 127.0.0.1:1\nleafTTL: 30m\nstore: {driver: sqlite}\n", "", func(c devConfig) bool {
			return c.Listen == "127.0.0.1:1" && time.Duration(c.LeafTTL) == 30*time.Minute && c.Store.Driver == "sqlite"
		}},
		{"unknown field", "bogus: 1\n", `unknown field "bogus"`, nil},
		{"wrong case", "trustdomain: example.org\n", `unknown field "trustdomain"`, nil},
		{"two spellings", "leafTTL: 30m\nleafttl: 20h\n", `unknown field "leafttl"`, nil},
		{"duplicate key", "listen: a\nlisten: b\n", `key "listen" already set`, nil},
		{"bad duration", "leafTTL: soon\n", "invalid duration", nil},
		{"wrong type", "hosts: 3\n", "cannot unmarshal", nil},
		{"nested unknown", "store: {driver: sqlite, password: x}\n", `unknown field "store.password"`, nil},
		{"not yaml", "{{{", "yaml", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultDevConfig()
			err := decodeStrict([]byte(tc.yaml), &cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !tc.check(cfg) {
					t.Errorf("decoded %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestUpstreamReplicaName(t *testing.T) {
	host := func(name string, err error) func() (string, error) {
		return func() (string, error) { return name, err }
	}
	for _, tc := range []struct {
		cfg      upstreamConfig
		hostname func() (string, error)
		want     string
	}{
		{upstreamConfig{Replica: "east-0"}, host("ignored", nil), "east-0"},
		{upstreamConfig{}, host("meshca-issuer-7d9f-x2x9z", nil), "meshca-issuer-7d9f-x2x9z"},
		{upstreamConfig{}, host("Node-1.example.com", nil), "node-1"},
		{upstreamConfig{}, host("", errors.New("no host name")), ""},
	} {
		if got := tc.cfg.replica(tc.hostname); got != tc.want {
			t.Errorf("replica of %+v = %q, want %q", tc.cfg, got, tc.want)
		}
	}
}
