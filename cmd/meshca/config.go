package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// duration is a time.Duration written as a Go duration string ("90m") in
// YAML and JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1h\" or \"30m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// devConfig is the YAML configuration of `meshca dev`. Every field is
// optional; flags override the file.
type devConfig struct {
	// DataDir holds the root key, the dev token key, the database and
	// bundle.pem. Default ./.meshca-dev.
	DataDir string `json:"dataDir,omitempty"`
	// Listen is the gRPC address. Default 127.0.0.1:8443.
	Listen string `json:"listen,omitempty"`
	// TrustDomain of issued SPIFFE IDs. Default cluster.local.
	TrustDomain string `json:"trustDomain,omitempty"`
	// Cluster is the issuer's cluster name. Default dev.
	Cluster string `json:"cluster,omitempty"`
	// Hosts are the DNS names and IPs in the serving certificate. Default
	// 127.0.0.1, ::1, localhost, istiod.istio-system.svc.
	Hosts []string `json:"hosts,omitempty"`
	// Leaf lifetimes: default 1h, clamped to [5m, 24h].
	LeafTTL    duration `json:"leafTTL,omitempty"`
	LeafMinTTL duration `json:"leafMinTTL,omitempty"`
	LeafMaxTTL duration `json:"leafMaxTTL,omitempty"`
	// IntermediateTTL is the lifetime of the intermediate minted at start.
	// Default 30 days.
	IntermediateTTL duration `json:"intermediateTTL,omitempty"`
	// Store selects the database; the default is SQLite in DataDir.
	Store storeConfig `json:"store,omitempty"`
}

func defaultDevConfig() devConfig {
	return devConfig{
		DataDir:     "./.meshca-dev",
		Listen:      "127.0.0.1:8443",
		TrustDomain: "cluster.local",
		Cluster:     "dev",
		Hosts:       []string{"127.0.0.1", "::1", "localhost", "istiod.istio-system.svc"},
	}
}

// loadConfig decodes a YAML file into cfg strictly: field names are
// case-sensitive, and unknown fields, duplicate keys and type mismatches are
// errors naming the file. (encoding/json, under sigs.k8s.io/yaml's own
// UnmarshalStrict, would match "leafttl" to leafTTL and let the last of two
// spellings win.)
func loadConfig(path string, cfg any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := decodeStrict(data, cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

func decodeStrict(data []byte, cfg any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(js, cfg)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}
