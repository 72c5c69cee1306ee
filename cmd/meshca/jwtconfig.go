package main

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/issuer/stack"
)

// jwtConfig is `jwt:`: the JWT-SVIDs the issuer mints
// (meshca.v1.JWTSVIDService, on the gRPC port).
type jwtConfig struct {
	// DefaultTTL is the lifetime of a JWT-SVID whose request names none.
	// Default 5m.
	DefaultTTL duration `json:"defaultTTL,omitempty"`
	// MaxTTL clamps requested lifetimes; a retired signing key stays
	// published for MaxTTL after its last use. Default 1h.
	MaxTTL duration `json:"maxTTL,omitempty"`
	// Issuer, when set, is the "iss" claim of every JWT-SVID: the https
	// URL of the trust domain's OIDC discovery document (cloud token
	// services require one). Default empty: no "iss".
	Issuer string `json:"issuer,omitempty"`
}

// validate checks c as issuer.JWTConfig.Validate will, defaults applied.
func (c jwtConfig) validate() error {
	def, maxTTL := time.Duration(c.DefaultTTL), time.Duration(c.MaxTTL)
	if def < 0 || maxTTL < 0 {
		return errors.New("jwt: durations must not be negative")
	}
	if def == 0 {
		def = issuer.DefaultJWTTTL
	}
	if maxTTL == 0 {
		maxTTL = issuer.DefaultJWTMaxTTL
	}
	if def > maxTTL {
		return fmt.Errorf("jwt: defaultTTL %s exceeds maxTTL %s", def, maxTTL)
	}
	if c.Issuer != "" {
		u, err := url.Parse(c.Issuer)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("jwt: issuer %q is not an https URL without query or fragment", c.Issuer)
		}
	}
	return nil
}

// stack is the stack's JWT configuration.
func (c jwtConfig) stack() stack.JWT {
	return stack.JWT{DefaultTTL: time.Duration(c.DefaultTTL), MaxTTL: time.Duration(c.MaxTTL), IssuerURL: c.Issuer}
}
