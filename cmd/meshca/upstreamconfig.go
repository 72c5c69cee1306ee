package main

import (
	"time"

	"github.com/meshca/meshca/ca/upstream"
)

// upstreamPKIConfig is `upstream:` of the root config: the upstream PKI that
// issues meshca's CA certificates instead of meshca self-signing them.
// Absent means self-signed roots. See the README, "Upstream PKI".
type upstreamPKIConfig struct {
	// Type is stepcas, vaultpki or cloudcas.
	Type string `json:"type,omitempty"`
	// TTL is the lifetime asked for meshca's CA certificate. Default 2160h
	// (90 days), at least 24h; renewed with a third of it left.
	TTL duration `json:"ttl,omitempty"`
	// StepCAS configures type stepcas.
	StepCAS upstreamStepCAS `json:"stepcas,omitempty"`
	// CloudCAS configures type cloudcas.
	CloudCAS upstreamCloudCAS `json:"cloudcas,omitempty"`
	// VaultPKI configures type vaultpki.
	VaultPKI upstreamVaultPKI `json:"vaultpki,omitempty"`
}

// upstreamVaultPKI is `upstream.vaultpki:` (upstream.VaultPKI); its auth
// is as `key.vault.auth:`.
type upstreamVaultPKI struct {
	Address     string          `json:"address,omitempty"`
	Namespace   string          `json:"namespace,omitempty"`
	CACertFile  string          `json:"caCertFile,omitempty"`
	Mount       string          `json:"mount,omitempty"`
	Issuer      string          `json:"issuer,omitempty"`
	Fingerprint string          `json:"fingerprint,omitempty"`
	Auth        vaultAuthConfig `json:"auth,omitempty"`
}

// upstreamStepCAS is `upstream.stepcas:` (upstream.StepCAS).
type upstreamStepCAS struct {
	URL             string `json:"url,omitempty"`
	Fingerprint     string `json:"fingerprint,omitempty"`
	Provisioner     string `json:"provisioner,omitempty"`
	ProvisionerType string `json:"provisionerType,omitempty"`
	KeyFile         string `json:"keyFile,omitempty"`
	PasswordFile    string `json:"passwordFile,omitempty"`
	CertFile        string `json:"certFile,omitempty"`
}

// upstreamCloudCAS is `upstream.cloudcas:` (upstream.CloudCAS).
type upstreamCloudCAS struct {
	CertificateAuthority string `json:"certificateAuthority,omitempty"`
	CredentialsFile      string `json:"credentialsFile,omitempty"`
}

// config maps u onto ca/upstream's Config; the zero u is the zero Config
// (no upstream). Validate the result.
func (u upstreamPKIConfig) config() upstream.Config {
	s, c, v := u.StepCAS, u.CloudCAS, u.VaultPKI
	cfg := upstream.Config{
		Type: u.Type, TTL: time.Duration(u.TTL),
		StepCAS: upstream.StepCAS{
			URL: s.URL, Fingerprint: s.Fingerprint, Provisioner: s.Provisioner, ProvisionerType: s.ProvisionerType,
			KeyFile: s.KeyFile, PasswordFile: s.PasswordFile, CertFile: s.CertFile,
		},
		CloudCAS: upstream.CloudCAS{CertificateAuthority: c.CertificateAuthority, CredentialsFile: c.CredentialsFile},
	}
	cfg.VaultPKI = upstream.VaultPKI{
		Address: v.Address, Namespace: v.Namespace, CACertFile: v.CACertFile, Mount: v.Mount, Issuer: v.Issuer,
		Fingerprint: v.Fingerprint, Auth: v.Auth.config(),
	}
	return cfg
}
