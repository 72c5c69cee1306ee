package ca

import (
	"cmp"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/meshca/meshca/trust"
)

// Defaults for CA lifetimes: the one place they are set, for every
// component that mints roots or intermediates (the central root, an
// issuer's local root, meshca dev).
const (
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
	// DefaultIntermediateTTL is the life of a cluster intermediate when its
	// component's intermediateTTL is not set, under the central root and
	// under a local root alike. An issuer prepares the next one at half of
	// it, so under the central root it keeps issuing for about a day while
	// the root is unreachable; a short life also bounds what a stolen
	// intermediate key is worth.
	DefaultIntermediateTTL = 48 * time.Hour
	// backdate is subtracted from NotBefore so that peers whose clocks lag a
	// little still accept a certificate that was just issued.
	backdate = 30 * time.Second
)

// ErrCAExpired means the CA that was asked to sign is not valid at the
// signing time; nothing is signed.
var ErrCAExpired = errors.New("signing CA is not valid at this time")

// Authority is a certificate authority: its certificate and the signer that
// holds its key. An Authority is immutable and safe for concurrent use as long
// as its Signer is.
type Authority struct {
	// Certificate is the CA's own certificate.
	Certificate *x509.Certificate
	// Signer holds the CA's private key; it may live in Vault or an HSM.
	Signer crypto.Signer
	// Chain holds the CA certificates above Certificate, nearest first, not
	// including the root. It is empty for a root or for an intermediate
	// signed directly by a root.
	Chain []*x509.Certificate
	// Until, when set, is an end no certificate this CA signs outlives and
	// after which it signs nothing: the earliest end of the certificates
	// above it when one of them ends before Certificate (an operator's
	// intermediate that outlives its root). Zero: Certificate's NotAfter.
	Until time.Time
}

// NewAuthority pairs a CA certificate with its signer after checking that the
// certificate is a CA and that the signer's public key matches it.
func NewAuthority(cert *x509.Certificate, signer crypto.Signer, chain ...*x509.Certificate) (*Authority, error) {
	if cert == nil || signer == nil {
		return nil, errors.New("authority needs a certificate and a signer")
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("certificate %q is not a CA", cert.Subject)
	}
	if !keyutil.Equal(cert.PublicKey, signer.Public()) {
		return nil, fmt.Errorf("certificate %q does not match the signer's public key", cert.Subject)
	}
	return &Authority{Certificate: cert, Signer: signer, Chain: chain}, nil
}

// RootConfig describes a self-signed root CA.
type RootConfig struct {
	// Signer holds the root key. Required.
	Signer crypto.Signer
	// CommonName of the root; empty means "meshca root CA". The subject
	// also holds O=meshca and a serialNumber derived from the key
	// (rootSubject).
	CommonName string
	// TTL is the root's lifetime; zero means DefaultRootTTL (10 years).
	TTL time.Duration
	// Now is the issuance time; zero means time.Now().
	Now time.Time
}

// rootTemplate's path length 2 leaves room for one cross certificate
// (another root's key, signed by this one during a rotation; see CrossSign)
// above a cluster intermediate, and no more: with the cross certificate's
// own path length 1 it stops a chain through two cross certificates in
// every verifier, because no two roots share a name (rootSubject).
const rootTemplate = `{
	"subject": {{ toJson .Subject }},
	"issuer": {{ toJson .Subject }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 2}
}`

// NewRoot creates a self-signed root CA certificate for cfg.Signer.
func NewRoot(cfg RootConfig) (*Authority, error) {
	if cfg.Signer == nil {
		return nil, errors.New("root: signer is required")
	}
	cfg.CommonName = cmp.Or(cfg.CommonName, "meshca root CA")
	cfg.TTL = cmp.Or(cfg.TTL, DefaultRootTTL)
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("root: negative ttl %v", cfg.TTL)
	}
	now := cfg.Now
	if now.IsZero() {
		now = time.Now()
	}
	data := x509util.NewTemplateData()
	subject, err := rootSubject(cfg.CommonName, cfg.Signer.Public())
	if err != nil {
		return nil, err
	}
	data.SetSubject(subject)
	tmpl, err := fromTemplate(rootTemplate, data, cfg.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	tmpl.NotBefore = now.Add(-backdate).UTC()
	tmpl.NotAfter = now.Add(cfg.TTL).UTC()
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, err
	}
	cert, err := x509util.CreateCertificate(tmpl, tmpl, cfg.Signer.Public(), cfg.Signer)
	if err != nil {
		return nil, fmt.Errorf("root: sign: %w", err)
	}
	return &Authority{Certificate: cert, Signer: cfg.Signer}, nil
}

// rootSubject names a new root: the common name, O=meshca, and as
// serialNumber (X.520's attribute for telling apart entities that share a
// name) the first 8 bytes, in hex, of the SHA-256 of the root's public key.
//
// Two roots therefore never share a name, so a cross certificate between
// them is never "self-issued" (RFC 5280 6.1: issuer equal to subject).
// OpenSSL and BoringSSL (Envoy) leave self-issued certificates out of the
// path length count, so between roots of one name a chain could run
// through two cross certificates (A by B, then B by C) and carry trust
// further than the pairs that were minted; with distinct names the cross
// certificates' path length 1 forbids that in every verifier, as it does
// in crypto/x509. The suffix comes from the key, not from chance, so a
// root re-made for the same key (a retried creation) keeps its name, and
// the common name stays what operators configure and search for.
func rootSubject(commonName string, pub crypto.PublicKey) (x509util.Subject, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return x509util.Subject{}, fmt.Errorf("root: public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	return x509util.Subject{CommonName: commonName, Organization: []string{"meshca"}, SerialNumber: hex.EncodeToString(sum[:8])}, nil
}

// IntermediateRequest asks a root for a per-cluster intermediate CA.
type IntermediateRequest struct {
	// PublicKey of the intermediate; its private key stays with the issuer.
	PublicKey crypto.PublicKey
	// TrustDomain is the only trust domain the intermediate may issue into:
	// it becomes a critical X.509 URI name constraint.
	TrustDomain spiffeid.TrustDomain
	// Cluster names the cluster; it goes into the subject and into the
	// intermediate's URI SAN (trust.IssuerServerID), which meshca's clients
	// require of the issuer they talk to.
	Cluster string
	// ServingNames are the DNS names and IP addresses the cluster's issuer
	// serves under; they become the only DNS and IP names the intermediate
	// may vouch for (critical name constraints). Nil means none: no DNS
	// name and no IP address verifies under the intermediate.
	ServingNames []string
	// WorkloadDNSNames are DNS names that workload leaves, not only the
	// issuer's serving certificate, may carry (istiod's, say). Each is
	// permitted exactly, without its subdomains. Nil means none.
	WorkloadDNSNames []string
	// TTL is the requested lifetime; zero means DefaultIntermediateTTL. The
	// result never outlives the signing CA.
	TTL time.Duration
	// Now is the issuance time; zero means time.Now().
	Now time.Time
}

const intermediateTemplate = `{
	"subject": {{ toJson .Subject }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0},
	"nameConstraints": {
		"critical": true,
		"permittedURIDomains": {{ toJson .Insecure.User.permitted }},
		"excludedURIDomains": {{ toJson .Insecure.User.excluded }}
	}
}`

// SignIntermediate signs a CA certificate with path length 0 that may only
// issue SPIFFE IDs in req.TrustDomain, serving certificates for
// req.ServingNames and the DNS names req.WorkloadDNSNames, and that names
// its cluster's issuer (trust.IssuerServerID).
func (a *Authority) SignIntermediate(req IntermediateRequest) (*x509.Certificate, error) {
	if req.PublicKey == nil {
		return nil, errors.New("intermediate: public key is required")
	}
	if req.TrustDomain.IsZero() {
		return nil, errors.New("intermediate: trust domain is required")
	}
	if req.Cluster == "" {
		return nil, errors.New("intermediate: cluster is required")
	}
	req.TTL = cmp.Or(req.TTL, DefaultIntermediateTTL)
	data := x509util.NewTemplateData()
	data.SetSubject(x509util.Subject{
		CommonName:         "meshca intermediate CA " + req.Cluster,
		Organization:       []string{"meshca"},
		OrganizationalUnit: []string{req.TrustDomain.Name()},
	})
	// RFC 5280 says a URI constraint without a leading period names exactly
	// one host, but crypto/x509 also lets it match every subdomain, so that
	// "cluster.local" would permit "spiffe://evil.cluster.local/...". The
	// excluded ".cluster.local" (subdomains only) closes that gap for every
	// verifier; a trust domain is a single host.
	td := req.TrustDomain.Name()
	data.SetInsecure(x509util.UserKey, map[string]any{"permitted": []string{td}, "excluded": []string{"." + td}})
	tmpl, err := fromTemplate(intermediateTemplate, data, req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	id, err := trust.IssuerServerID(req.TrustDomain, req.Cluster)
	if err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	tmpl.URIs = []*url.URL{id.URL()}
	if err := constrainNames(tmpl, req.ServingNames, req.WorkloadDNSNames); err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	if err := a.setValidity(tmpl, req.Now, req.TTL); err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, err
	}
	cert, err := x509util.CreateCertificate(tmpl, a.Certificate, req.PublicKey, a.Signer)
	if err != nil {
		return nil, fmt.Errorf("intermediate: sign: %w", err)
	}
	return cert, nil
}

// LeafRequest asks a CA for an end-entity certificate. The caller (the
// issuer) has already decided the names; SignLeaf does not apply policy.
type LeafRequest struct {
	PublicKey   crypto.PublicKey
	URIs        []*url.URL
	DNSNames    []string
	IPAddresses []net.IP
	// TTL is the requested lifetime; it must be positive. The certificate
	// never outlives the signing CA: NotAfter is clamped to the CA's.
	TTL time.Duration
	// Now is the issuance time; zero means time.Now().
	Now time.Time
	// ExtKeyUsage defaults to server and client authentication.
	ExtKeyUsage []x509.ExtKeyUsage
}

// SignLeaf signs an end-entity certificate with a random 128-bit serial.
// It fails with ErrCAExpired when the CA is not valid at req.Now.
//
// A returned certificate's signature has been verified against the public
// key of a.Certificate: x509.CreateCertificate refuses a signer whose public
// key is not the parent certificate's and verifies the signature the signer
// produced (TestSignLeafRefusesBadSignatures). Callers rely on this and do
// not check the signature again.
func (a *Authority) SignLeaf(req LeafRequest) (*x509.Certificate, error) {
	if req.PublicKey == nil {
		return nil, errors.New("leaf: public key is required")
	}
	if req.TTL <= 0 {
		return nil, fmt.Errorf("leaf: ttl must be positive, got %v", req.TTL)
	}
	eku := req.ExtKeyUsage
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := req.PublicKey.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		URIs:                  req.URIs,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
	}
	if err := a.setValidity(tmpl, req.Now, req.TTL); err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	var err error
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, err
	}
	der, err := a.signLeaf(tmpl, req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("leaf: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("leaf: parse: %w", err)
	}
	return cert, nil
}

// signLeaf returns the DER of tmpl signed by a for pub, its signature
// verified against a.Certificate's public key: by signLeafDER for the
// workload leaf under an ECDSA authority, by x509.CreateCertificate
// otherwise.
func (a *Authority) signLeaf(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	if alg, hash, ok := a.leafDERSigner(); ok && leafDERShape(tmpl) {
		return a.signLeafDER(tmpl, pub, alg, hash)
	}
	return x509.CreateCertificate(rand.Reader, tmpl, a.Certificate, pub, a.Signer)
}

// setValidity sets NotBefore/NotAfter for a certificate signed by a: ttl from
// now, clamped so it never outlives a's certificate. The caller draws the
// serial number.
func (a *Authority) setValidity(tmpl *x509.Certificate, now time.Time, ttl time.Duration) error {
	if now.IsZero() {
		now = time.Now()
	}
	parent := a.Certificate
	end := parent.NotAfter
	if !a.Until.IsZero() && a.Until.Before(end) {
		end = a.Until
	}
	if now.Before(parent.NotBefore) || !now.Before(end) {
		return fmt.Errorf("%w: %q is valid from %s to %s", ErrCAExpired, parent.Subject.CommonName,
			parent.NotBefore.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
	}
	notBefore := now.Add(-backdate)
	if notBefore.Before(parent.NotBefore) {
		notBefore = parent.NotBefore
	}
	notAfter := now.Add(ttl)
	if notAfter.After(end) {
		notAfter = end
	}
	tmpl.NotBefore, tmpl.NotAfter = notBefore.UTC(), notAfter.UTC()
	return nil
}

func fromTemplate(text string, data x509util.TemplateData, pub crypto.PublicKey) (*x509.Certificate, error) {
	c, err := x509util.NewCertificateFromX509(&x509.Certificate{PublicKey: pub}, x509util.WithTemplate(text, data))
	if err != nil {
		return nil, fmt.Errorf("render template: %w", err)
	}
	return c.GetCertificate(), nil
}

// newSerial returns a random, positive, non-zero 128-bit serial number.
func newSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("serial: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}
