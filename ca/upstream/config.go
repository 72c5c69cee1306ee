package upstream

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/meshca/meshca/ca/vault"
)

// Types of upstream authority, as Config.Type names them.
const (
	// TypeStepCAS is a step-ca server, through a provisioner that may issue
	// CA certificates (cas/stepcas).
	TypeStepCAS = "stepcas"
	// TypeCloudCAS is a Google Cloud Certificate Authority Service CA
	// (cas/cloudcas).
	TypeCloudCAS = "cloudcas"
	// TypeVaultPKI is a Vault PKI secrets engine, through meshca's own
	// adapter (its issuer's sign-intermediate endpoint).
	TypeVaultPKI = "vaultpki"
	// TypeVaultCAS is recognised only to be refused with the reason (see
	// the package documentation).
	TypeVaultCAS = "vaultcas"
)

// Provisioner types of a step-ca upstream.
const (
	ProvisionerJWK = "jwk"
	ProvisionerX5C = "x5c"
)

// Lifetimes of meshca's CA certificate under an upstream.
const (
	// DefaultTTL is the lifetime asked for when Config.TTL is zero. The
	// certificate is renewed when less than a third of it is left, which
	// leaves about a month of retries against an unreachable upstream.
	DefaultTTL = 90 * 24 * time.Hour
	// MinTTL is the shortest lifetime Config.TTL may ask for, and the
	// shortest remaining life Issue accepts from the upstream: meshca's CA
	// must outlive several cluster intermediates (48 h by default).
	MinTTL = 24 * time.Hour
)

// Config selects the upstream authority and says how to reach it. The
// zero value (Type empty) means no upstream: meshca self-signs its roots.
type Config struct {
	// Type is TypeStepCAS, TypeVaultPKI or TypeCloudCAS; empty means no
	// upstream.
	Type string
	// TTL is the lifetime asked for meshca's CA certificate; zero means
	// DefaultTTL. The upstream may shorten it (a step-ca provisioner's
	// maxTLSCertDuration, a CA pool's issuance policy) down to MinTTL.
	TTL time.Duration
	// StepCAS configures Type TypeStepCAS; it must be zero otherwise.
	StepCAS StepCAS
	// CloudCAS configures Type TypeCloudCAS; it must be zero otherwise.
	CloudCAS CloudCAS
	// VaultPKI configures Type TypeVaultPKI; it must be zero otherwise.
	VaultPKI VaultPKI
}

// VaultPKI is a Vault PKI secrets engine upstream. The token's policy
// needs update on MOUNT/issuer/ISSUER/sign-intermediate and read on
// MOUNT/issuer/ISSUER/json.
type VaultPKI struct {
	// Address of Vault, e.g. https://vault.example:8200. Required.
	Address string
	// Namespace is the Vault Enterprise namespace; empty means the root
	// namespace.
	Namespace string
	// Auth is how to log in, as for the Vault Transit root keys (token or
	// token file, AppRole, Kubernetes). Required.
	Auth vault.AuthConfig
	// CACertFile holds the CAs of Vault's TLS certificate; empty means the
	// system roots.
	CACertFile string
	// TLSServerName overrides the name checked in Vault's certificate;
	// empty means the host of Address.
	TLSServerName string
	// Mount is the PKI secrets engine's path; empty means "pki".
	Mount string
	// Issuer is the issuer's name or ID in the mount; empty means the
	// mount's default issuer. Its chain must end at a self-signed root
	// (the mount's own root, or one imported with the issuer).
	Issuer string
	// Fingerprint, when set, is the hex SHA-256 of that root: the trust
	// anchor is refused when it differs. Empty means the root is whatever
	// the issuer's chain ends at, as authenticated by Vault's TLS.
	Fingerprint string
}

// StepCAS is a step-ca upstream. Its provisioner decides what the issued
// certificate is: its X.509 template must make a CA certificate (see the
// README's "Upstream PKI").
type StepCAS struct {
	// URL is step-ca's HTTPS address, e.g. https://ca.example.com:9000.
	// Required.
	URL string
	// Fingerprint is the lower- or upper-case hex SHA-256 of step-ca's root
	// certificate: it pins the TLS connection and the trust anchor.
	// Required.
	Fingerprint string
	// Provisioner is the provisioner's name. Required.
	Provisioner string
	// ProvisionerType is ProvisionerJWK or ProvisionerX5C. Required.
	ProvisionerType string
	// KeyFile is the provisioner's private key (PEM, encrypted when
	// PasswordFile is set). Required for x5c; for jwk, empty means the
	// encrypted key step-ca keeps for the provisioner, which then needs
	// PasswordFile.
	KeyFile string
	// PasswordFile holds the password of the key (one line; a trailing
	// newline is ignored). Empty means an unencrypted KeyFile.
	PasswordFile string
	// CertFile is, for x5c only, the certificate (chain) that authorises
	// the key to the provisioner. Required for x5c, empty for jwk.
	CertFile string
}

// CloudCAS is a Google Cloud CAS upstream.
type CloudCAS struct {
	// CertificateAuthority is the CA's resource name,
	// projects/P/locations/L/caPools/POOL/certificateAuthorities/CA. Its
	// pool's issuance policy must allow CA certificates. Required.
	CertificateAuthority string
	// CredentialsFile is a service account key file; empty means Google's
	// application default credentials.
	CredentialsFile string
}

// cloudCARe is the resource name cloudcas accepts.
var cloudCARe = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/caPools/[^/]+/certificateAuthorities/[^/]+$`)

// Enabled reports whether an upstream is configured.
func (c Config) Enabled() bool { return c.Type != "" }

// Validate reports the first problem with c without changing it. It does
// not read files or reach the upstream.
func (c Config) Validate() error {
	if c.TTL < 0 || (c.TTL != 0 && c.TTL < MinTTL) {
		return fmt.Errorf("upstream: ttl %v: must be zero (default %v) or at least %v", c.TTL, DefaultTTL, MinTTL)
	}
	switch c.Type {
	case "":
		if c.TTL != 0 || c.StepCAS != (StepCAS{}) || c.CloudCAS != (CloudCAS{}) || c.VaultPKI != (VaultPKI{}) {
			return errors.New("upstream: options given without a type")
		}
		return nil
	case TypeVaultCAS:
		return errors.New("upstream: type vaultcas cannot issue meshca's CA certificate: it signs with Vault's " +
			"pki/sign/ROLE endpoint, which never makes a CA certificate; use vaultpki (pki/issuer/REF/sign-intermediate)")
	}
	if err := c.othersZero(); err != nil {
		return err
	}
	switch c.Type {
	case TypeStepCAS:
		return c.StepCAS.validate()
	case TypeCloudCAS:
		return c.CloudCAS.validate()
	case TypeVaultPKI:
		return c.VaultPKI.validate()
	default:
		return fmt.Errorf("upstream: unknown type %q (want %s, %s or %s)", c.Type, TypeStepCAS, TypeVaultPKI, TypeCloudCAS)
	}
}

// othersZero refuses options of another type than c.Type.
func (c Config) othersZero() error {
	for typ, zero := range map[string]bool{
		TypeStepCAS: c.StepCAS == (StepCAS{}), TypeCloudCAS: c.CloudCAS == (CloudCAS{}), TypeVaultPKI: c.VaultPKI == (VaultPKI{}),
	} {
		if typ != c.Type && !zero {
			return fmt.Errorf("upstream: %s options given for type %s", typ, c.Type)
		}
	}
	return nil
}

func (s StepCAS) validate() error {
	u, err := url.Parse(s.URL)
	switch {
	case s.URL == "":
		return errors.New("upstream stepcas: url is required")
	case err != nil:
		return fmt.Errorf("upstream stepcas: url: %w", err)
	case u.Scheme != "https" || u.Host == "" || u.User != nil:
		return fmt.Errorf("upstream stepcas: url %q: want https://HOST[:PORT] without user info", s.URL)
	}
	if b, err := hex.DecodeString(s.Fingerprint); err != nil || len(b) != 32 {
		return fmt.Errorf("upstream stepcas: fingerprint %q: want the hex SHA-256 of step-ca's root (64 digits)", s.Fingerprint)
	}
	if s.Provisioner == "" {
		return errors.New("upstream stepcas: provisioner is required")
	}
	switch s.ProvisionerType {
	case ProvisionerJWK:
		if s.CertFile != "" {
			return errors.New("upstream stepcas: certFile is for x5c provisioners only")
		}
		if s.KeyFile == "" && s.PasswordFile == "" {
			return errors.New("upstream stepcas: a jwk provisioner needs keyFile, or passwordFile to decrypt the key step-ca keeps")
		}
	case ProvisionerX5C:
		if s.CertFile == "" || s.KeyFile == "" {
			return errors.New("upstream stepcas: an x5c provisioner needs certFile and keyFile")
		}
	case "":
		return fmt.Errorf("upstream stepcas: provisionerType is required (%s or %s)", ProvisionerJWK, ProvisionerX5C)
	default:
		return fmt.Errorf("upstream stepcas: unknown provisionerType %q (want %s or %s)", s.ProvisionerType, ProvisionerJWK, ProvisionerX5C)
	}
	return nil
}

func (v VaultPKI) validate() error {
	if b, err := hex.DecodeString(v.Fingerprint); v.Fingerprint != "" && (err != nil || len(b) != 32) {
		return fmt.Errorf("upstream vaultpki: fingerprint %q: want the hex SHA-256 of the issuer's root (64 digits)", v.Fingerprint)
	}
	if strings.ContainsAny(v.Mount, " ") || strings.Contains(v.Issuer, "/") {
		return fmt.Errorf("upstream vaultpki: mount %q or issuer %q is not a path segment", v.Mount, v.Issuer)
	}
	if err := (vault.Config{Address: v.Address, Auth: v.Auth}).ValidateConnection(); err != nil {
		return fmt.Errorf("upstream vaultpki: %w", err)
	}
	return nil
}

func (c CloudCAS) validate() error {
	if !cloudCARe.MatchString(c.CertificateAuthority) {
		return fmt.Errorf("upstream cloudcas: certificateAuthority %q: want projects/P/locations/L/caPools/POOL/certificateAuthorities/CA",
			c.CertificateAuthority)
	}
	return nil
}
