package issuer

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// verify checks, before anything leaves the issuer, that leaf is exactly the
// certificate meant for id and pub, and that it is valid under the signing
// chain: what RFC 5280 path validation checks for a leaf whose only name is
// one URI, and the DNS names dns.
//
//   - The leaf: exactly one URI SAN, id, the DNS names dns and no other
//     name; not a CA; no
//     unhandled critical extension; the requested public key; client and
//     server authentication.
//   - Issuer binding: the leaf names the intermediate as issuer, by subject
//     and by key identifier.
//   - Validity: every certificate of the chain is valid now, and the leaf
//     does not outlive the intermediate.
//   - Every CA of the chain: its URI name constraints admit id's trust
//     domain, its DNS name constraints each of dns, and its extended key
//     usages (if any) admit the leaf's.
//   - A leaf with DNS names (rare: istiod's, see DNSGrant) is verified by
//     crypto/x509 too, for each name, signature included.
//
// The leaf's signature is not checked a second time: [ca.Authority.SignLeaf]
// only returns certificates whose signature x509.CreateCertificate has
// verified against the intermediate certificate's public key (it refuses a
// signer whose public key is not the parent's, then verifies the signature
// the signer produced), and the intermediate's own chain to the bundle was
// verified in SetAuthority. A signature check is the most expensive step of
// issuance, so doing it once instead of twice is worth a fifth of the
// issuer's CPU (docs/benchmarks.md, issuance section).
func (s *signing) verify(leaf *x509.Certificate, pub crypto.PublicKey, id spiffeid.ID, dns []string, now time.Time) error {
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		return fmt.Errorf("leaf URI SANs %v, want exactly %s", leaf.URIs, id)
	}
	if !slices.Equal(leaf.DNSNames, dns) {
		return fmt.Errorf("leaf DNS names %q, want %q", leaf.DNSNames, dns)
	}
	if len(leaf.IPAddresses)+len(leaf.EmailAddresses) > 0 || len(leaf.Subject.CommonName) > 0 {
		return errors.New("leaf carries names other than its SPIFFE ID and granted DNS names")
	}
	if leaf.IsCA {
		return errors.New("leaf is a CA")
	}
	if len(leaf.UnhandledCriticalExtensions) > 0 {
		return fmt.Errorf("leaf has unhandled critical extensions %v", leaf.UnhandledCriticalExtensions)
	}
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return errors.New("leaf public key is not the requested one")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !slices.Contains(leaf.ExtKeyUsage, usage) {
			return fmt.Errorf("leaf lacks extended key usage %v", usage)
		}
	}
	in := s.authority.Certificate
	if !bytes.Equal(leaf.RawIssuer, in.RawSubject) {
		return fmt.Errorf("leaf issuer %q is not the intermediate %q", leaf.Issuer, in.Subject)
	}
	if len(in.SubjectKeyId) > 0 && !bytes.Equal(leaf.AuthorityKeyId, in.SubjectKeyId) {
		return errors.New("leaf authority key identifier is not the intermediate's")
	}
	if leaf.NotAfter.After(in.NotAfter) || leaf.NotBefore.Before(in.NotBefore) {
		return errors.New("leaf validity is not within the intermediate's")
	}
	host := id.TrustDomain().Name()
	for _, c := range slices.Concat([]*x509.Certificate{leaf}, s.chain, []*x509.Certificate{s.root}) {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return fmt.Errorf("%q is not valid at %s (valid %s to %s)", c.Subject, now.UTC().Format(time.RFC3339),
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		}
		if c == leaf {
			continue
		}
		if len(c.PermittedURIDomains) > 0 && !slices.ContainsFunc(c.PermittedURIDomains, func(d string) bool { return domainMatches(host, d) }) {
			return fmt.Errorf("%s is outside the URI domains %q permits", id, c.Subject)
		}
		if slices.ContainsFunc(c.ExcludedURIDomains, func(d string) bool { return domainMatches(host, d) }) {
			return fmt.Errorf("%s is within URI domains %q excludes", id, c.Subject)
		}
		for _, n := range dns {
			if !permits(c, n, nil) {
				return fmt.Errorf("DNS name %q is outside the name constraints of %q", n, c.Subject)
			}
		}
		if len(c.ExtKeyUsage) > 0 && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) &&
			(!slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth)) {
			return fmt.Errorf("%q does not permit client and server authentication", c.Subject)
		}
	}
	return s.verifyDNS(leaf, dns, now)
}

// verifyDNS has crypto/x509 verify leaf's chain to the bundle as a server
// certificate for each of dns.
func (s *signing) verifyDNS(leaf *x509.Certificate, dns []string, now time.Time) error {
	if len(dns) == 0 {
		return nil
	}
	inters := x509.NewCertPool()
	for _, c := range s.chain {
		inters.AddCert(c)
	}
	for _, n := range dns {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: s.bundle.Pool(), Intermediates: inters, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("leaf for DNS name %q: %w", n, err)
		}
	}
	return nil
}

// domainMatches reports whether host is within an RFC 5280 URI name
// constraint, as crypto/x509 reads one: "" matches everything, ".example.org"
// any subdomain of example.org, and "example.org" that host and its
// subdomains. Comparison ignores case.
func domainMatches(host, constraint string) bool {
	host, constraint = strings.ToLower(host), strings.ToLower(constraint)
	switch {
	case constraint == "":
		return true
	case strings.HasPrefix(constraint, "."):
		return len(host) > len(constraint) && strings.HasSuffix(host, constraint)
	default:
		return host == constraint || strings.HasSuffix(host, "."+constraint)
	}
}
