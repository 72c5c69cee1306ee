package trust

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Server identities. A DNS name says little about which meshca server a
// client reached: every cluster's issuer serves istiod.istio-system.svc. So
// meshca's own clients also require an identity that only the intended
// server can present:
//
//   - a cluster's issuer presents a serving certificate signed by its
//     intermediate, and the root wrote IssuerServerID(trust domain,
//     cluster) into that intermediate. An intermediate has path length 0,
//     so no other cluster's issuer can make a CA that names this cluster;
//   - that serving certificate names IssuerServerID too, as its only URI
//     SAN. The same intermediate signs workload certificates, some of
//     them with DNS names the issuer also serves under (istiod's, by a DNS
//     grant); a workload certificate's only URI SAN is its own
//     spiffe://<td>/ns/<namespace>/sa/<account>, so it never passes;
//   - the root presents a serving certificate signed directly by a root
//     CA and naming RootServerURI. Intermediates cannot mint it: it has no
//     host, so it fails every URI name constraint, and it must sit directly
//     under a trusted root.
const issuerPathPrefix = "/meshca/issuer/"

// RootServerURI is the URI SAN of the root's TLS serving certificate.
var RootServerURI = &url.URL{Scheme: "urn", Opaque: "meshca:root"}

// DefaultServingNames are the DNS names a cluster's issuer serves under when
// it asks for none: the names istio-agent and meshca's manifests use.
var DefaultServingNames = []string{"istiod.istio-system.svc", "meshca.meshca-system.svc"}

// IssuerServerID is the URI SAN of the intermediate of cluster's issuer in
// td: spiffe://<td>/meshca/issuer/<cluster>.
func IssuerServerID(td spiffeid.TrustDomain, cluster string) (spiffeid.ID, error) {
	id, err := spiffeid.FromPath(td, issuerPathPrefix+cluster)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("issuer identity of cluster %q: %w", cluster, err)
	}
	return id, nil
}

// issuerCluster returns the trust domain and cluster a CA certificate names
// as its issuer identity; ok is false when it names none.
func issuerCluster(c *x509.Certificate) (td spiffeid.TrustDomain, cluster string, ok bool) {
	for _, u := range c.URIs {
		id, err := spiffeid.FromURI(u)
		if err != nil {
			continue
		}
		if name, found := strings.CutPrefix(id.Path(), issuerPathPrefix); found && name != "" && !strings.Contains(name, "/") {
			return id.TrustDomain(), name, true
		}
	}
	return spiffeid.TrustDomain{}, "", false
}

// SplitServingNames separates DNS names from IP addresses and checks each
// name: a lower-case DNS name without wildcards, or an IP address.
func SplitServingNames(names []string) (dns []string, ips []net.IP, err error) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if !ValidDNSName(n) {
			return nil, nil, fmt.Errorf("serving name %q is not a DNS name or IP address", n)
		}
		dns = append(dns, n)
	}
	return dns, ips, nil
}

// ValidDNSName reports whether n is a lower-case DNS name of letters,
// digits and hyphens, without wildcards, empty labels or a trailing dot.
func ValidDNSName(n string) bool {
	if n == "" || len(n) > 253 || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".") {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// ErrWrongServer means a TLS server proved a chain to a trusted root but not
// the identity the client asked for, or its CA is revoked.
var ErrWrongServer = errors.New("not the expected meshca server")

// ServerCheck is what a meshca client requires of the server it reached,
// on top of a chain to its roots and the host name (crypto/tls checks
// both). The zero value requires some cluster's issuer.
type ServerCheck struct {
	// Root requires the meshca root: a serving certificate signed directly
	// by a trusted root CA and naming RootServerURI. Cluster and
	// TrustDomain are then ignored.
	Root bool
	// Authorities, for Root, are meshca's own CAs (TrustBundle.
	// OwnAuthorities): the serving certificate's issuer must be one of
	// them, wherever the chain ends. Nil means the trusted root the chain
	// ends at must have signed it directly (no upstream PKI).
	Authorities *Bundle
	// Cluster requires the issuer of this cluster: the CA that signed the
	// serving certificate names it (IssuerServerID). Empty means the issuer
	// of any cluster. Either way the serving certificate must name the
	// same issuer as its only URI SAN (ServingServerID), which no
	// workload certificate does.
	Cluster string
	// TrustDomain, when not zero, requires the issuer's intermediate to be
	// of this trust domain too.
	TrustDomain spiffeid.TrustDomain
	// CRLs are CRLs the client holds; a chain with a CA listed as revoked
	// in a CRL signed by that CA's issuer is refused. Their freshness is
	// not checked: a revoked serial stays revoked. Nil means none known.
	CRLs []*x509.RevocationList
}

// VerifyConnection is a tls.Config.VerifyConnection callback that accepts
// the connection when one of its verified chains meets c. It runs during
// the handshake, before the client sends any request or credential. The
// tls.Config must verify chains (InsecureSkipVerify false).
func (c ServerCheck) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return fmt.Errorf("%w: no verified chain", ErrWrongServer)
	}
	var first error
	for _, chain := range cs.VerifiedChains {
		err := c.VerifyChain(chain)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// VerifyChain checks one chain verified by crypto/x509 (leaf first, trusted
// root last) against c.
func (c ServerCheck) VerifyChain(chain []*x509.Certificate) error {
	if len(chain) < 2 {
		return fmt.Errorf("%w: the serving certificate is itself a root", ErrWrongServer)
	}
	if err := c.checkRevoked(chain); err != nil {
		return err
	}
	leaf := chain[0]
	if c.Root {
		direct := len(chain) == 2
		if c.Authorities != nil {
			direct = c.Authorities.contains(chain[1])
		}
		if !direct || !hasURI(leaf, RootServerURI) {
			return fmt.Errorf("%w: want the meshca root (%s signed directly by a meshca root CA), got %s", ErrWrongServer, RootServerURI, describe(chain))
		}
		return nil
	}
	td, cluster, ok := issuerCluster(chain[1])
	switch {
	case !ok || !chain[1].IsCA:
		return fmt.Errorf("%w: want a cluster issuer, got %s (an intermediate without an issuer identity is refused)", ErrWrongServer, describe(chain))
	case c.Cluster != "" && cluster != c.Cluster, !c.TrustDomain.IsZero() && td != c.TrustDomain:
		want := c.Cluster
		if !c.TrustDomain.IsZero() {
			want = c.TrustDomain.Name() + "/" + want
		}
		return fmt.Errorf("%w: want the issuer of cluster %q, got the issuer of %s/%s", ErrWrongServer, want, td.Name(), cluster)
	}
	return checkServingLeaf(leaf, td, cluster)
}

// checkServingLeaf requires leaf, signed by the intermediate of cluster's
// issuer in td, to be that issuer's serving certificate rather than a
// workload certificate the same intermediate signed: its only URI SAN is
// the issuer's identity.
func checkServingLeaf(leaf *x509.Certificate, td spiffeid.TrustDomain, cluster string) error {
	id, err := IssuerServerID(td, cluster)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWrongServer, err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		return fmt.Errorf("%w: want the serving certificate of the issuer of %s/%s (URI SAN %s), got a certificate with URI SANs %v under its intermediate",
			ErrWrongServer, td.Name(), cluster, id, leaf.URIs)
	}
	return nil
}

// ServingServerID returns the URI SAN a cluster's issuer puts in its
// serving certificate signed by intermediate: the issuer identity the
// intermediate names (IssuerServerID). ok is false when the intermediate
// names none (a plug-in CA's); meshca's clients then refuse the issuer
// whatever its serving certificate says.
func ServingServerID(intermediate *x509.Certificate) (id spiffeid.ID, ok bool) {
	td, cluster, ok := issuerCluster(intermediate)
	if !ok {
		return spiffeid.ID{}, false
	}
	id, err := IssuerServerID(td, cluster)
	return id, err == nil
}

// checkRevoked refuses a chain with a CA that a held CRL of its issuer
// lists.
func (c ServerCheck) checkRevoked(chain []*x509.Certificate) error {
	for i := 1; i < len(chain)-1; i++ {
		cert, parent := chain[i], chain[i+1]
		for _, crl := range c.CRLs {
			if !bytes.Equal(crl.RawIssuer, parent.RawSubject) || crl.CheckSignatureFrom(parent) != nil {
				continue
			}
			for _, e := range crl.RevokedCertificateEntries {
				if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
					return fmt.Errorf("%w: CA %q serial %s is revoked", ErrWrongServer, cert.Subject.CommonName, SerialHex(cert.SerialNumber))
				}
			}
		}
	}
	return nil
}

func hasURI(c *x509.Certificate, want *url.URL) bool {
	for _, u := range c.URIs {
		if u.String() == want.String() {
			return true
		}
	}
	return false
}

// describe names what a chain's server presented, for error messages.
func describe(chain []*x509.Certificate) string {
	if hasURI(chain[0], RootServerURI) && len(chain) == 2 {
		return "the meshca root"
	}
	if len(chain) > 2 {
		if td, cluster, ok := issuerCluster(chain[1]); ok {
			return fmt.Sprintf("the issuer of %s/%s", td.Name(), cluster)
		}
		return fmt.Sprintf("a server under CA %q", chain[1].Subject.CommonName)
	}
	return fmt.Sprintf("a server signed directly by %q", chain[1].Subject.CommonName)
}
