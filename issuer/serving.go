package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// servingCerts keeps the issuer's own TLS certificate, signed by the current
// intermediate and renewed on demand once half of its life has passed or
// the intermediate has changed. Its key never leaves memory.
type servingCerts struct {
	iss   *Issuer
	hosts []string
	ttl   time.Duration

	mu      sync.Mutex
	key     crypto.Signer
	current *tls.Certificate
	renewAt time.Time
	// signedBy is the authority that signed current; a new one (after
	// SetAuthority) means renewing at once, so that the served chain moves
	// to the new intermediate with the issued certificates.
	signedBy *ca.Authority
}

func newServingCerts(iss *Issuer, hosts []string, ttl time.Duration) (*servingCerts, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	s := &servingCerts{iss: iss, hosts: hosts, ttl: ttl, key: key}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is a tls.Config.GetCertificate callback.
func (s *servingCerts) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.get() }

func (s *servingCerts) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.iss.cfg.Now()
	sig := s.iss.current()
	if s.current != nil && now.Before(s.renewAt) && s.signedBy == sig.authority {
		return s.current, nil
	}
	req := servingRequest(s.key.Public(), sig.authority.Certificate, s.ttl, now)
	var dropped []string
	for _, h := range s.hosts {
		ip := net.ParseIP(h)
		switch {
		case !permits(sig.authority.Certificate, h, ip):
			dropped = append(dropped, h)
		case ip != nil:
			req.IPAddresses = append(req.IPAddresses, ip)
		default:
			req.DNSNames = append(req.DNSNames, h)
		}
	}
	if len(dropped) > 0 && s.signedBy != sig.authority {
		s.iss.cfg.Logger.Warn("serving without the names the intermediate does not permit", "names", dropped,
			"serial", trust.SerialHex(sig.authority.Certificate.SerialNumber))
	}
	if len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return nil, fmt.Errorf("serving certificate: the intermediate permits none of the serving names %q", s.hosts)
	}
	leaf, err := sig.authority.SignLeaf(req)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	if err := verifyServing(leaf, sig, now); err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: s.key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, c := range sig.chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s.current, s.signedBy = cert, sig.authority
	s.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return cert, nil
}

// servingRequest starts the request for a serving certificate under
// intermediate: for server authentication only, naming as its one URI SAN
// the issuer identity the intermediate names (trust.ServingServerID). That
// URI is what tells meshca's clients this certificate from a workload's
// under the same intermediate with the same DNS name (a DNS grant): a
// workload certificate's only URI is its own /ns/.../sa/... SPIFFE ID.
func servingRequest(pub crypto.PublicKey, intermediate *x509.Certificate, ttl time.Duration, now time.Time) ca.LeafRequest {
	req := ca.LeafRequest{PublicKey: pub, TTL: ttl, Now: now, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if id, ok := trust.ServingServerID(intermediate); ok {
		req.URIs = []*url.URL{id.URL()}
	}
	return req
}

// permits reports whether CA certificate c may vouch for the serving name
// host (ip when it is an IP address), by c's name constraints as
// crypto/x509 reads them. An intermediate without DNS or IP constraints
// (minted before they existed) permits every name.
func permits(c *x509.Certificate, host string, ip net.IP) bool {
	if ip != nil {
		for _, r := range c.ExcludedIPRanges {
			if r.Contains(ip) {
				return false
			}
		}
		return len(c.PermittedIPRanges) == 0 || slices.ContainsFunc(c.PermittedIPRanges, func(r *net.IPNet) bool { return r.Contains(ip) })
	}
	match := func(constraint string) bool {
		if strings.HasPrefix(constraint, ".") {
			return strings.HasSuffix(host, constraint)
		}
		return constraint == "" || strings.EqualFold(host, constraint) || strings.HasSuffix(strings.ToLower(host), "."+strings.ToLower(constraint))
	}
	if slices.ContainsFunc(c.ExcludedDNSDomains, match) {
		return false
	}
	return len(c.PermittedDNSDomains) == 0 || slices.ContainsFunc(c.PermittedDNSDomains, match)
}

// verifyServing checks a serving certificate just signed: it chains to the
// bundle's roots for server authentication, every name it carries within
// the name constraints above it.
func verifyServing(leaf *x509.Certificate, sig *signing, now time.Time) error {
	inters := x509.NewCertPool()
	for _, c := range sig.chain {
		inters.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: sig.bundle.Pool(), Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	return nil
}
