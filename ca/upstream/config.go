package upstream

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// Types of upstream authority, as Config.Type names them.
const (
	// TypeStepCAS is a step-ca server, through a provisioner that may issue
	// CA certificates (cas/stepcas).
	TypeStepCAS = "stepcas"
	// TypeCloudCAS is a Google Cloud Certificate Authority Service CA
	// (cas/cloudcas).
	TypeCloudCAS = "cloudcas"
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
	// Type is TypeStepCAS or TypeCloudCAS; empty means no upstream.
	Type string
	// TTL is the lifetime asked for meshca's CA certificate; zero means
	// DefaultTTL. The upstream may shorten it (a step-ca provisioner's
	// maxTLSCertDuration, a CA pool's issuance policy) down to MinTTL.
	TTL time.Duration
	// StepCAS configures Type TypeStepCAS; it must be zero otherwise.
	StepCAS StepCAS
	// CloudCAS configures Type TypeCloudCAS; it must be zero otherwise.
	CloudCAS CloudCAS
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
		if c.TTL != 0 || c.StepCAS != (StepCAS{}) || c.CloudCAS != (CloudCAS{}) {
			return errors.New("upstream: options given without a type")
		}
		return nil
	case TypeStepCAS:
		if c.CloudCAS != (CloudCAS{}) {
			return errors.New("upstream: cloudcas options given for type stepcas")
		}
		return c.StepCAS.validate()
	case TypeCloudCAS:
		if c.StepCAS != (StepCAS{}) {
			return errors.New("upstream: stepcas options given for type cloudcas")
		}
		return c.CloudCAS.validate()
	case TypeVaultCAS:
		return errors.New("upstream: type vaultcas cannot issue meshca's CA certificate: it signs with Vault's " +
			"pki/sign/ROLE endpoint, which never makes a CA certificate; use stepcas or cloudcas")
	default:
		return fmt.Errorf("upstream: unknown type %q (want %s or %s)", c.Type, TypeStepCAS, TypeCloudCAS)
	}
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

func (c CloudCAS) validate() error {
	if !cloudCARe.MatchString(c.CertificateAuthority) {
		return fmt.Errorf("upstream cloudcas: certificateAuthority %q: want projects/P/locations/L/caPools/POOL/certificateAuthorities/CA",
			c.CertificateAuthority)
	}
	return nil
}
