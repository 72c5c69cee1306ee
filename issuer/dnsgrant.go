package issuer

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// Bounds of Config.DNSGrants.
const (
	MaxDNSGrants         = 64
	MaxDNSNamesPerGrant  = 32
	dnsGrantPathSegments = 4 // ns, <namespace>, sa, <service account>
)

// DNSGrant is the one exception to "a workload certificate names its
// SPIFFE ID and nothing else": the identity it names may also have the DNS
// names it lists, and only those. It exists for istiod, whose serving
// certificate must carry istiod.istio-system.svc. The names must also be
// permitted by the issuer's intermediate (under a central root, the
// cluster's record on the root lists them); the issuer checks both before
// signing.
type DNSGrant struct {
	// SPIFFEID is the identity, spiffe://<trust domain>/ns/<namespace>/sa/<service
	// account>, in the issuer's trust domain. Required.
	SPIFFEID spiffeid.ID
	// Cluster is the cluster the identity must be attested in; empty means
	// the issuer's own (Config.Cluster). The same namespace and service
	// account in another cluster the issuer attests get no DNS name.
	Cluster string
	// DNSNames are the names the identity may ask for in its CSR, any
	// subset of them: lower-case DNS names, no wildcards (each names one
	// service), no IP addresses, no repeats, none beneath another listed
	// name (an intermediate's name constraint then could not admit both
	// exactly), at most MaxDNSNamesPerGrant. A name belongs to one grant.
	// Required.
	DNSNames []string
}

// ValidateDNSGrants reports the first problem with grants for an issuer of
// td (Config.Validate calls it); it changes nothing.
func ValidateDNSGrants(grants []DNSGrant, td spiffeid.TrustDomain) error {
	if len(grants) > MaxDNSGrants {
		return fmt.Errorf("issuer: %d DNS grants; at most %d", len(grants), MaxDNSGrants)
	}
	type who struct {
		id      spiffeid.ID
		cluster string
	}
	var seen []who
	var all []string
	for i, g := range grants {
		if err := validateDNSGrant(g, td); err != nil {
			return fmt.Errorf("issuer: DNS grant %d: %w", i, err)
		}
		w := who{g.SPIFFEID, g.Cluster}
		if slices.Contains(seen, w) {
			return fmt.Errorf("issuer: DNS grant %d: %s (cluster %q) has another grant; list its names in one", i, g.SPIFFEID, g.Cluster)
		}
		seen = append(seen, w)
		all = append(all, g.DNSNames...)
	}
	for i, n := range all {
		if slices.Contains(all[:i], n) {
			return fmt.Errorf("issuer: DNS name %q is granted twice: a name belongs to one identity", n)
		}
		for _, o := range all {
			if strings.HasSuffix(o, "."+n) {
				return fmt.Errorf("issuer: DNS name %q is beneath the granted %q: a name constraint cannot admit both exactly", o, n)
			}
		}
	}
	return nil
}

func validateDNSGrant(g DNSGrant, td spiffeid.TrustDomain) error {
	seg := strings.Split(strings.TrimPrefix(g.SPIFFEID.Path(), "/"), "/")
	switch {
	case g.SPIFFEID.IsZero():
		return errors.New("SPIFFE ID is required")
	case g.SPIFFEID.TrustDomain() != td:
		return fmt.Errorf("%s is not in the issuer's trust domain %s", g.SPIFFEID, td)
	case len(seg) != dnsGrantPathSegments || seg[0] != "ns" || seg[2] != "sa":
		return fmt.Errorf("%s is not a workload identity (want spiffe://%s/ns/NAMESPACE/sa/SERVICE_ACCOUNT)", g.SPIFFEID, td)
	case len(g.DNSNames) == 0:
		return fmt.Errorf("%s: no DNS names", g.SPIFFEID)
	case len(g.DNSNames) > MaxDNSNamesPerGrant:
		return fmt.Errorf("%s: %d DNS names; at most %d", g.SPIFFEID, len(g.DNSNames), MaxDNSNamesPerGrant)
	}
	for _, n := range g.DNSNames {
		if strings.Contains(n, "*") {
			return fmt.Errorf("%s: DNS name %q: wildcards are not allowed; list each name", g.SPIFFEID, n)
		}
		if !trust.ValidDNSName(n) || net.ParseIP(n) != nil {
			return fmt.Errorf("%s: %q is not a lower-case DNS name", g.SPIFFEID, n)
		}
	}
	return nil
}

// DNSGrantNames returns every DNS name grants give, in order: what the
// issuer's intermediate must permit exactly (ca.IntermediateRequest's
// WorkloadDNSNames).
func DNSGrantNames(grants []DNSGrant) []string {
	var out []string
	for _, g := range grants {
		out = append(out, g.DNSNames...)
	}
	return out
}

// dnsAllowed returns the DNS names the identity id, attested in cluster,
// may have; nil for almost everyone. An empty cluster matches no grant.
func (iss *Issuer) dnsAllowed(cluster string, id spiffeid.ID) []string {
	if cluster == "" {
		return nil
	}
	for _, g := range iss.cfg.DNSGrants {
		if g.SPIFFEID == id && (g.Cluster == cluster || g.Cluster == "" && cluster == iss.cfg.Cluster) {
			return g.DNSNames
		}
	}
	return nil
}

// checkDNSPermitted refuses DNS names that a CA of the signing chain does
// not admit: the issuer's configuration grants them, but its intermediate
// was not minted for them (the cluster's record on the root lacks them, or
// the intermediate predates the grant). The intermediate must carry a DNS
// constraint admitting each name (one without any, minted before they
// existed, admits no workload DNS name); CAs above it may be
// unconstrained. That is not the caller's fault, and a later intermediate
// may carry the names: Unavailable.
func (s *signing) checkDNSPermitted(names []string) error {
	for _, n := range names {
		for _, c := range s.chain {
			if c.Equal(s.authority.Certificate) && len(c.PermittedDNSDomains) == 0 || !permits(c, n, nil) {
				return fmt.Errorf("%w: intermediate %q (serial %s) does not permit the granted DNS name %q; "+
					"the cluster's record on the root (or the local root's configuration) must list it",
					ErrUnavailable, c.Subject.CommonName, trust.SerialHex(c.SerialNumber), n)
			}
		}
	}
	return nil
}
