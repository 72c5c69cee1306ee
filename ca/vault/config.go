package vault

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"time"
)

// Key types the Signer can create and use. They are Vault Transit's names.
const (
	KeyTypeECDSAP256 = "ecdsa-p256"
	KeyTypeECDSAP384 = "ecdsa-p384"
	KeyTypeRSA2048   = "rsa-2048"
	KeyTypeRSA3072   = "rsa-3072"
	KeyTypeRSA4096   = "rsa-4096"
)

// Authentication methods.
const (
	AuthToken      = "token"
	AuthAppRole    = "approle"
	AuthKubernetes = "kubernetes"
)

// Defaults applied by New to zero Config fields.
const (
	defaultMount = "transit"
	// DefaultTimeout bounds each Vault call when Config.Timeout is zero.
	DefaultTimeout           = 10 * time.Second
	defaultAppRoleMount      = "approle"
	defaultKubernetesMount   = "kubernetes"
	defaultKubernetesJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Config describes a Transit key used as a crypto.Signer. The zero value of
// every optional field is documented beside it; New applies the defaults and
// cmd/ calls Validate first to report a bad configuration early.
type Config struct {
	// Address of the Vault server, e.g. "https://vault.vault.svc:8200".
	// Required.
	Address string
	// Namespace is the Vault Enterprise namespace; empty means the root
	// namespace.
	Namespace string
	// Mount is the path where the Transit engine is mounted; empty means
	// "transit".
	Mount string
	// KeyName names the Transit key. Required.
	KeyName string
	// KeyType is the type of the key New creates when it does not exist:
	// "ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072" or "rsa-4096";
	// empty means "ecdsa-p256". An existing key must have this type.
	// RSA keys sign with PSS or PKCS #1 v1.5, as chosen by the
	// crypto.SignerOpts passed to Sign (*rsa.PSSOptions means PSS).
	KeyType string
	// Auth says how to log in to Vault.
	Auth AuthConfig
	// CACertFile is a PEM bundle of the CAs that may sign Vault's TLS
	// certificate; empty means the system roots.
	CACertFile string
	// TLSServerName overrides the name checked in Vault's certificate;
	// empty means the host of Address.
	TLSServerName string
	// Timeout bounds each Vault call, including each Sign (which has no
	// context) and each login; zero means DefaultTimeout (10s).
	Timeout time.Duration
	// MaxRetries is how many times a call that failed with a connection
	// error or a 5xx response is retried, with backoff, within Timeout;
	// zero means none: the caller (e.g. a rotation loop) retries instead.
	MaxRetries int
	// Logger receives token lifecycle events (renewal failures,
	// re-authentication); nil means slog.Default(). It never receives
	// tokens or secret IDs.
	Logger *slog.Logger
}

// AuthConfig selects one Vault authentication method.
type AuthConfig struct {
	// Method is "token", "approle" or "kubernetes"; empty means "token".
	Method string
	// Token is a Vault token (method "token"). Prefer TokenFile: a file can
	// be rotated (e.g. by Vault Agent) and is re-read when the token is
	// rejected or expires.
	Token string
	// TokenFile holds a Vault token (method "token"); exactly one of Token
	// and TokenFile is required for that method.
	TokenFile string
	// AppRole configures method "approle".
	AppRole AppRoleConfig
	// Kubernetes configures method "kubernetes".
	Kubernetes KubernetesConfig
}

// AppRoleConfig configures AppRole login.
type AppRoleConfig struct {
	// RoleID of the AppRole. Required.
	RoleID string
	// SecretIDFile holds the secret ID; it is re-read at every login.
	// Required.
	SecretIDFile string
	// Mount is the path of the AppRole auth method; empty means "approle".
	Mount string
}

// KubernetesConfig configures Kubernetes service-account login.
type KubernetesConfig struct {
	// Role is the Vault role bound to the service account. Required.
	Role string
	// JWTFile holds the service-account token; it is re-read at every
	// login, so a projected token that the kubelet rotates keeps working.
	// Empty means DefaultKubernetesJWTFile.
	JWTFile string
	// Mount is the path of the Kubernetes auth method; empty means
	// "kubernetes".
	Mount string
}

// Validate reports the first problem with c without contacting Vault.
func (c Config) Validate() error {
	if err := c.ValidateConnection(); err != nil {
		return err
	}
	if c.KeyName == "" {
		return errors.New("vault: key name is required")
	}
	if !keyNameRE.MatchString(c.KeyName) {
		return fmt.Errorf("vault: key name %q: use letters, digits, '_', '-', '.' and '@'", c.KeyName)
	}
	if _, err := keyTypeOf(c.KeyType); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	return nil
}

// ValidateConnection reports the first problem with what NewClient uses
// (address, bounds, login) without contacting Vault or changing c.
func (c Config) ValidateConnection() error {
	if c.Address == "" {
		return errors.New("vault: address is required")
	}
	u, err := url.Parse(c.Address)
	if err != nil {
		return fmt.Errorf("vault: address: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix") || (u.Host == "" && u.Scheme != "unix") {
		return fmt.Errorf("vault: address %q must be an http(s):// or unix:// URL", c.Address)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("vault: negative timeout %v", c.Timeout)
	}
	if c.MaxRetries < 0 {
		return fmt.Errorf("vault: negative max retries %d", c.MaxRetries)
	}
	if err := c.Auth.validate(); err != nil {
		return fmt.Errorf("vault: auth: %w", err)
	}
	return nil
}

func (a AuthConfig) validate() error {
	switch a.Method {
	case "", AuthToken:
		if (a.Token == "") == (a.TokenFile == "") {
			return errors.New("method token needs exactly one of token and token file")
		}
	case AuthAppRole:
		if a.AppRole.RoleID == "" || a.AppRole.SecretIDFile == "" {
			return errors.New("method approle needs a role ID and a secret ID file")
		}
	case AuthKubernetes:
		if a.Kubernetes.Role == "" {
			return errors.New("method kubernetes needs a role")
		}
	default:
		return fmt.Errorf("unknown method %q (want token, approle or kubernetes)", a.Method)
	}
	return nil
}

// withDefaults returns c with every zero optional field set to its default.
func (c Config) withDefaults() Config {
	c.Mount = cmp.Or(c.Mount, defaultMount)
	c.KeyType = cmp.Or(c.KeyType, KeyTypeECDSAP256)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	c.Auth.Method = cmp.Or(c.Auth.Method, AuthToken)
	c.Auth.AppRole.Mount = cmp.Or(c.Auth.AppRole.Mount, defaultAppRoleMount)
	c.Auth.Kubernetes.Mount = cmp.Or(c.Auth.Kubernetes.Mount, defaultKubernetesMount)
	c.Auth.Kubernetes.JWTFile = cmp.Or(c.Auth.Kubernetes.JWTFile, defaultKubernetesJWTFile)
	return c
}

// keyNameRE is the name pattern Vault's Transit paths accept.
var keyNameRE = regexp.MustCompile(`^\w(?:[\w.@-]*\w)?$`)

// keyKind is the family of a Transit key type.
type keyKind int

const (
	kindECDSA keyKind = iota + 1
	kindRSA
)

func keyTypeOf(t string) (keyKind, error) {
	switch t {
	case "", KeyTypeECDSAP256, KeyTypeECDSAP384:
		return kindECDSA, nil
	case KeyTypeRSA2048, KeyTypeRSA3072, KeyTypeRSA4096:
		return kindRSA, nil
	}
	return 0, fmt.Errorf("unsupported key type %q (want ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096)", t)
}
