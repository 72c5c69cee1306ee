package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/meshca/meshca/ca"
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
	sig := s.iss.signing.Load()
	if s.current != nil && now.Before(s.renewAt) && s.signedBy == sig.authority {
		return s.current, nil
	}
	req := ca.LeafRequest{PublicKey: s.key.Public(), TTL: s.ttl, Now: now}
	for _, h := range s.hosts {
		if ip := net.ParseIP(h); ip != nil {
			req.IPAddresses = append(req.IPAddresses, ip)
		} else {
			req.DNSNames = append(req.DNSNames, h)
		}
	}
	leaf, err := sig.authority.SignLeaf(req)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: s.key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, c := range sig.chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s.current, s.signedBy = cert, sig.authority
	s.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return cert, nil
}
