package ca

import (
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/meshca/meshca/trust"
)

// constrainNames limits tmpl (a CA) to the given serving names (DNS names,
// each with its subdomains, as crypto/x509 reads a DNS constraint, and IP
// addresses) and to exactly the given workload DNS names.
//
// A DNS constraint permits its name and every subdomain (RFC 5280; Go and
// OpenSSL alike), so each workload name w also gets an excluded ".w",
// which matches subdomains only: "istiod.istio-system.svc" is admitted,
// "x.istiod.istio-system.svc" is not, even when w is a serving name too.
// A name with another permitted name beneath it keeps its subdomains, as
// excluding them would exclude that name as well.
//
// Without DNS names only the reserved "invalid" domain is permitted, which
// no real name is in; without IPs every IP address is excluded.
func constrainNames(tmpl *x509.Certificate, servingNames, workloadDNS []string) error {
	dns, ips, err := trust.SplitServingNames(servingNames)
	if err != nil {
		return err
	}
	for _, w := range workloadDNS {
		if !trust.ValidDNSName(w) || net.ParseIP(w) != nil {
			return fmt.Errorf("workload DNS name %q is not a DNS name", w)
		}
	}
	dns = unique(append(dns, workloadDNS...))
	if len(dns) == 0 {
		dns = []string{"invalid"}
	}
	tmpl.PermittedDNSDomains = dns
	for _, w := range unique(workloadDNS) {
		if !slices.ContainsFunc(dns, func(o string) bool { return strings.HasSuffix(o, "."+w) }) {
			tmpl.ExcludedDNSDomains = append(tmpl.ExcludedDNSDomains, "."+w)
		}
	}
	for _, ip := range ips {
		bits := 8 * net.IPv6len
		if v4 := ip.To4(); v4 != nil {
			ip, bits = v4, 8*net.IPv4len
		}
		tmpl.PermittedIPRanges = append(tmpl.PermittedIPRanges, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
	}
	if len(ips) == 0 {
		tmpl.ExcludedIPRanges = []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 8*net.IPv4len)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 8*net.IPv6len)},
		}
	}
	tmpl.PermittedDNSDomainsCritical = true
	return nil
}

// unique returns names without repeats, in their first order.
func unique(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
