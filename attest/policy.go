package attest

import (
	"context"
	"fmt"
	"strings"
)

// PolicyConfig is a namespace/service-account allow and deny list.
//
// Each entry is "NAMESPACE/SERVICEACCOUNT" where either part may be "*"
// (any). An identity is accepted when it matches no Deny entry and, if Allow
// is not empty, at least one Allow entry: deny wins.
type PolicyConfig struct {
	// Allow lists the identities that may be attested. Empty means all that
	// are not denied.
	Allow []string `json:"allow,omitempty"`
	// Deny lists identities that are never attested, whatever Allow says.
	// Empty means none. Typical: "kube-system/*".
	Deny []string `json:"deny,omitempty"`
}

// Validate checks that every entry is NAMESPACE/SERVICEACCOUNT with each
// part "*" or a DNS-1123 label.
func (c PolicyConfig) Validate() error {
	for _, list := range []struct {
		name    string
		entries []string
	}{{"allow", c.Allow}, {"deny", c.Deny}} {
		for _, e := range list.entries {
			if _, err := parsePattern(e); err != nil {
				return fmt.Errorf("attestation policy: %s: %w", list.name, err)
			}
		}
	}
	return nil
}

// IsZero reports whether c allows every identity.
func (c *PolicyConfig) IsZero() bool { return len(c.Allow) == 0 && len(c.Deny) == 0 }

type pattern struct{ ns, sa string }

func parsePattern(s string) (pattern, error) {
	ns, sa, ok := strings.Cut(s, "/")
	if !ok {
		return pattern{}, fmt.Errorf("entry %q is not NAMESPACE/SERVICEACCOUNT", s)
	}
	for _, part := range []string{ns, sa} {
		if part != "*" && !isDNS1123Label(part) {
			return pattern{}, fmt.Errorf("entry %q: %q is neither * nor a DNS-1123 label", s, part)
		}
	}
	return pattern{ns: ns, sa: sa}, nil
}

func (p pattern) matches(ns, sa string) bool {
	return (p.ns == "*" || p.ns == ns) && (p.sa == "*" || p.sa == sa)
}

// policy is a compiled PolicyConfig.
type policy struct {
	allow, deny []pattern
}

func compilePolicy(c PolicyConfig) (*policy, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	p := &policy{}
	for _, e := range c.Allow {
		pt, _ := parsePattern(e)
		p.allow = append(p.allow, pt)
	}
	for _, e := range c.Deny {
		pt, _ := parsePattern(e)
		p.deny = append(p.deny, pt)
	}
	return p, nil
}

// check is pure: nil when ns/sa is accepted, else an error wrapping
// ErrUnauthenticated that names the rule.
func (p *policy) check(ns, sa string) error {
	for _, d := range p.deny {
		if d.matches(ns, sa) {
			return because(ErrNotAllowed, fmt.Errorf("%w: %s/%s is denied by policy entry %s/%s", ErrUnauthenticated, ns, sa, d.ns, d.sa))
		}
	}
	if len(p.allow) == 0 {
		return nil
	}
	for _, a := range p.allow {
		if a.matches(ns, sa) {
			return nil
		}
	}
	return because(ErrNotAllowed, fmt.Errorf("%w: %s/%s is not in the policy's allow list", ErrUnauthenticated, ns, sa))
}

// NewPolicy returns an Attestor that attests with next and then rejects
// identities cfg does not accept (as ErrUnauthenticated: callers learn
// nothing about the policy; the reason goes to the log). Put it outside
// [NewCached] so that a cached identity is still checked against the policy.
func NewPolicy(next Attestor, cfg PolicyConfig) (Attestor, error) {
	p, err := compilePolicy(cfg)
	if err != nil {
		return nil, err
	}
	return &policyAttestor{next: next, policy: p}, nil
}

type policyAttestor struct {
	next   Attestor
	policy *policy
}

func (a *policyAttestor) Attest(ctx context.Context, req Request) (Identity, error) {
	id, err := a.next.Attest(ctx, req)
	if err != nil {
		return Identity{}, err
	}
	if err := a.policy.check(id.Namespace, id.ServiceAccount); err != nil {
		return Identity{}, fmt.Errorf("cluster %q: %w", id.Cluster, err)
	}
	return id, nil
}
