package ca

import (
	"crypto/x509"
	"net"

	"github.com/meshca/meshca/trust"
)

// constrainServingNames limits tmpl (a CA) to the given DNS names (each with
// its subdomains, as crypto/x509 reads a DNS constraint) and IP addresses.
// Without DNS names only the reserved "invalid" domain is permitted, which
// no real name is in; without IPs every IP address is excluded.
func constrainServingNames(tmpl *x509.Certificate, names []string) error {
	dns, ips, err := trust.SplitServingNames(names)
	if err != nil {
		return err
	}
	if len(dns) == 0 {
		dns = []string{"invalid"}
	}
	tmpl.PermittedDNSDomains = dns
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
