package attest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// subjectPrefix starts the "sub" of every service-account token.
const subjectPrefix = "system:serviceaccount:"

// tokenClaims is the payload of a Kubernetes projected service-account token.
// The dev signer marshals the same type, so minted tokens cannot drift from
// what the attestor parses.
type tokenClaims struct {
	Issuer     string           `json:"iss"`
	Subject    string           `json:"sub"`
	Audience   audience         `json:"aud"`
	Expiry     *jwt.NumericDate `json:"exp,omitempty"`
	NotBefore  *jwt.NumericDate `json:"nbf,omitempty"`
	IssuedAt   *jwt.NumericDate `json:"iat,omitempty"`
	ID         string           `json:"jti,omitempty"`
	Kubernetes *k8sClaim        `json:"kubernetes.io,omitempty"`
}

// audience is the "aud" claim. RFC 7519 allows a string or an array of
// strings; it is marshaled as an array, as the API server does.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// k8sClaim is the "kubernetes.io" private claim. Newer API servers add
// "node" and "warnafter"; they are ignored.
type k8sClaim struct {
	Namespace      string  `json:"namespace"`
	ServiceAccount *objRef `json:"serviceaccount,omitempty"`
	Pod            *objRef `json:"pod,omitempty"`
}

type objRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// parseClaims turns a verified token payload into an Identity, enforcing the
// issuer, audience, time and service-account rules of cfg at time now. It is
// pure: cfg must already have defaults applied, and only cfg.Issuer,
// cfg.Audiences, cfg.Leeway and cfg.Cluster are read. Every error wraps
// ErrUnauthenticated.
func parseClaims(payload []byte, cfg *JWKSConfig, now time.Time) (Identity, error) {
	var c tokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Identity{}, fmt.Errorf("%w: malformed token claims: %w", ErrUnauthenticated, err)
	}
	if c.Issuer != cfg.Issuer {
		return Identity{}, fmt.Errorf("%w: token issuer %q not accepted", ErrUnauthenticated, clip(c.Issuer))
	}
	if !slices.ContainsFunc(c.Audience, func(aud string) bool { return slices.Contains(cfg.Audiences, aud) }) {
		return Identity{}, because(ErrAudience, fmt.Errorf("%w: token audience %q not accepted", ErrUnauthenticated, clip(strings.Join(c.Audience, ","))))
	}
	if err := checkTimes(&c, now, cfg.Leeway); err != nil {
		return Identity{}, err
	}

	ns, sa, ok := parseSubject(c.Subject)
	if !ok {
		return Identity{}, fmt.Errorf("%w: token subject %q is not a service account", ErrUnauthenticated, clip(c.Subject))
	}
	if !isDNS1123Label(ns) {
		return Identity{}, fmt.Errorf("%w: invalid namespace %q", ErrUnauthenticated, clip(ns))
	}
	if !isDNS1123Label(sa) {
		return Identity{}, fmt.Errorf("%w: invalid service account name %q", ErrUnauthenticated, clip(sa))
	}

	k := c.Kubernetes
	switch {
	case k == nil:
		return Identity{}, fmt.Errorf("%w: token has no kubernetes.io claim", ErrUnauthenticated)
	case k.Namespace != ns:
		return Identity{}, fmt.Errorf("%w: kubernetes.io namespace %q does not match subject %q", ErrUnauthenticated, clip(k.Namespace), clip(c.Subject))
	case k.ServiceAccount == nil || k.ServiceAccount.UID == "":
		return Identity{}, fmt.Errorf("%w: kubernetes.io claim has no service account uid", ErrUnauthenticated)
	case k.ServiceAccount.Name != sa:
		return Identity{}, fmt.Errorf("%w: kubernetes.io service account %q does not match subject %q", ErrUnauthenticated, clip(k.ServiceAccount.Name), clip(c.Subject))
	}

	id := Identity{
		Cluster:        cfg.Cluster,
		Namespace:      ns,
		ServiceAccount: sa,
		Expiry:         c.Expiry.Time().UTC(),
	}
	if p := k.Pod; p != nil {
		if p.UID == "" || !isDNS1123Subdomain(p.Name) {
			return Identity{}, fmt.Errorf("%w: kubernetes.io pod reference %q/%q is invalid", ErrUnauthenticated, clip(p.Name), clip(p.UID))
		}
		id.PodName, id.PodUID = p.Name, p.UID
	}
	return id, nil
}

// checkTimes enforces exp (required), nbf and iat with leeway.
func checkTimes(c *tokenClaims, now time.Time, leeway time.Duration) error {
	if c.Expiry == nil {
		return fmt.Errorf("%w: token has no expiry", ErrUnauthenticated)
	}
	if exp := c.Expiry.Time(); now.After(exp.Add(leeway)) {
		return because(ErrExpired, fmt.Errorf("%w: token expired at %s", ErrUnauthenticated, exp.UTC().Format(time.RFC3339)))
	}
	if c.NotBefore != nil {
		if nbf := c.NotBefore.Time(); now.Add(leeway).Before(nbf) {
			return because(ErrExpired, fmt.Errorf("%w: token not valid before %s", ErrUnauthenticated, nbf.UTC().Format(time.RFC3339)))
		}
	}
	if c.IssuedAt != nil {
		if iat := c.IssuedAt.Time(); now.Add(leeway).Before(iat) {
			return because(ErrExpired, fmt.Errorf("%w: token issued in the future at %s", ErrUnauthenticated, iat.UTC().Format(time.RFC3339)))
		}
	}
	return nil
}

// parseSubject splits "system:serviceaccount:<ns>:<sa>". It does not
// validate the parts.
func parseSubject(sub string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(sub, subjectPrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, ":")
}

// isDNS1123Label reports whether s is a DNS-1123 label as Kubernetes defines
// it for namespace names: 1–63 characters of [a-z0-9-], starting and ending
// alphanumeric.
func isDNS1123Label(s string) bool {
	return len(s) <= 63 && isLabelShaped(s)
}

// isDNS1123Subdomain reports whether s is a DNS-1123 subdomain as Kubernetes
// defines it for pod names: at most 253 characters of dot-separated
// label-shaped parts (Kubernetes does not bound each part to 63).
func isDNS1123Subdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if !isLabelShaped(part) {
			return false
		}
	}
	return true
}

// isLabelShaped reports whether s is non-empty, made of [a-z0-9-], and starts
// and ends alphanumeric.
func isLabelShaped(s string) bool {
	if len(s) == 0 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
