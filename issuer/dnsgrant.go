package issuer

import (
	"crypto/x509"
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
// certificate must carry istiod.istio-system.svc. The intermediate must
// also admit each name exactly, as a workload DNS name (under a central
// root the cluster's record on the root lists them; a local root takes
// them from the grants); the issuer checks both before signing.
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

// checkDNSPermitted refuses DNS names that the signing chain was not made
// for: the issuer's configuration grants them, but the intermediate does
// not admit each as a workload DNS name, that is exactly (the name
// permitted, its subdomains excluded: ca.IntermediateRequest's
// WorkloadDNSNames). A name the intermediate admits only as one of the
// issuer's serving names does not count: under a central root the
// cluster's record decides which names workloads may have. CAs above the
// intermediate must admit the names too. That is not the caller's fault,
// and a later intermediate may carry the names: Unavailable.
func (s *signing) checkDNSPermitted(names []string) error {
	for _, n := range names {
		inter := s.authority.Certificate
		if !admitsWorkloadDNS(inter, n) {
			return fmt.Errorf("%w: intermediate %q (serial %s) was not made for the granted DNS name %q; "+
				"the cluster's record on the root (meshca admin cluster add --dns-name) or the local root's dnsGrants must list it",
				ErrUnavailable, inter.Subject.CommonName, trust.SerialHex(inter.SerialNumber), n)
		}
		for _, c := range s.chain {
			if !permits(c, n, nil) {
				return fmt.Errorf("%w: CA %q does not permit the granted DNS name %q", ErrUnavailable, c.Subject.CommonName, n)
			}
		}
	}
	return nil
}

// admitsWorkloadDNS reports whether intermediate c admits n exactly: n
// permitted and its subdomains excluded.
func admitsWorkloadDNS(c *x509.Certificate, n string) bool {
	return slices.Contains(c.PermittedDNSDomains, n) && slices.Contains(c.ExcludedDNSDomains, "."+n)
}

// warnUnadmitted logs the granted DNS names intermediate c does not admit:
// requests for them fail until an intermediate does, which an operator
// should hear of before istiod does.
func (iss *Issuer) warnUnadmitted(c *x509.Certificate) {
	var missing []string
	for _, n := range DNSGrantNames(iss.cfg.DNSGrants) {
		if !admitsWorkloadDNS(c, n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		iss.cfg.Logger.Warn("the intermediate does not admit DNS names that dnsGrants grant; requests for them fail until one does "+
			"(under a central root: meshca admin cluster add --dns-name)", "names", missing, "serial", trust.SerialHex(c.SerialNumber))
	}
}
