package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/renameio/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// Files in UpstreamConfig.CredentialDir.
const (
	credentialKeyFile  = "credential-key.pem"
	credentialCertFile = "credential.pem"
	// pendingKeyFile holds a credential key whose certificate is being
	// obtained. commit renames it over credentialKeyFile once the
	// certificate is stored; load finishes an interrupted commit.
	pendingKeyFile = "credential-key.pem.next"
	rootsFile      = "roots.pem"
)

// credential is the issuer's client certificate for Renew: a leaf signed
// directly by a root, for spiffe://<trust domain>/meshca/cluster/<cluster>,
// or .../<cluster>/<replica> for a replica enrolled with a join token of
// several replicas.
type credential struct {
	key         crypto.Signer
	chain       []*x509.Certificate // the credential first, root excluded
	trustDomain spiffeid.TrustDomain
	cluster     string
	replica     string
}

func (c *credential) leaf() *x509.Certificate { return c.chain[0] }

// credentialID is the SPIFFE ID the root gives the issuer credential of
// replica of a cluster ("" for its single issuer).
func credentialID(td spiffeid.TrustDomain, cluster, replica string) (spiffeid.ID, error) {
	if replica == "" {
		return spiffeid.FromSegments(td, "meshca", "cluster", cluster)
	}
	return spiffeid.FromSegments(td, "meshca", "cluster", cluster, replica)
}

// parseCredentialID returns the trust domain, cluster and replica a
// credential names.
func parseCredentialID(leaf *x509.Certificate) (td spiffeid.TrustDomain, cluster, replica string, err error) {
	if len(leaf.URIs) != 1 {
		return spiffeid.TrustDomain{}, "", "", fmt.Errorf("credential has %d URI SANs, want 1", len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.TrustDomain{}, "", "", fmt.Errorf("credential URI SAN: %w", err)
	}
	rest, ok := strings.CutPrefix(id.Path(), "/meshca/cluster/")
	cluster, replica, _ = strings.Cut(rest, "/")
	if want, err := credentialID(id.TrustDomain(), cluster, replica); !ok || err != nil || want != id {
		return spiffeid.TrustDomain{}, "", "", fmt.Errorf("credential %s is not an issuer credential", id)
	}
	return id.TrustDomain(), cluster, replica, nil
}

// credentialFiles stores the credential. Every file is replaced atomically
// (renameio); the key is written before the certificate it belongs to, so
// that a crash at any point leaves a loadable credential: the old one, or
// the new one with its key still pending.
type credentialFiles struct{ dir string }

func (f credentialFiles) path(name string) string { return filepath.Join(f.dir, name) }

func (f credentialFiles) certPath() string { return f.path(credentialCertFile) }

// load returns the stored credential, nil when there is none.
func (f credentialFiles) load() (*credential, error) {
	data, err := os.ReadFile(f.certPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("issuer credential: %w", err)
	}
	chain, err := pemutil.ParseCertificateBundle(data)
	if err != nil {
		return nil, fmt.Errorf("issuer credential %s: %w", f.certPath(), err)
	}
	td, cluster, replica, err := parseCredentialID(chain[0])
	if err != nil {
		return nil, fmt.Errorf("issuer credential %s: %w", f.certPath(), err)
	}
	for _, name := range []string{credentialKeyFile, pendingKeyFile} {
		key, err := ca.LoadKeyFile(f.path(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("issuer credential: %w", err)
		}
		if !keyutil.Equal(chain[0].PublicKey, key.Public()) {
			continue
		}
		if name == pendingKeyFile {
			if err := f.promotePendingKey(); err != nil {
				return nil, err
			}
		}
		return &credential{key: key, chain: chain, trustDomain: td, cluster: cluster, replica: replica}, nil
	}
	return nil, fmt.Errorf("issuer credential %s: no key in %s matches it", f.certPath(), f.dir)
}

// writePendingKey stores the key of a credential being requested.
func (f credentialFiles) writePendingKey(key crypto.Signer) error {
	block, err := pemutil.Serialize(key, pemutil.WithPKCS8(true))
	if err != nil {
		return fmt.Errorf("encode credential key: %w", err)
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return fmt.Errorf("credential directory: %w", err)
	}
	if err := renameio.WriteFile(f.path(pendingKeyFile), pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("write credential key: %w", err)
	}
	return nil
}

// commit stores cred, whose key writePendingKey has stored.
func (f credentialFiles) commit(cred *credential) error {
	if err := renameio.WriteFile(f.certPath(), trust.EncodeCertificates(cred.chain...), 0o644); err != nil {
		return fmt.Errorf("write issuer credential: %w", err)
	}
	return f.promotePendingKey()
}

func (f credentialFiles) promotePendingKey() error {
	if err := os.Rename(f.path(pendingKeyFile), f.path(credentialKeyFile)); err != nil {
		return fmt.Errorf("store credential key: %w", err)
	}
	if d, err := os.Open(f.dir); err == nil { // make the rename durable
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// loadRoots returns the roots remembered from the last bundle, nil when
// there are none.
func (f credentialFiles) loadRoots() (*trust.Bundle, error) {
	data, err := os.ReadFile(f.path(rootsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return trust.ParseBundle(data)
}

func (f credentialFiles) writeRoots(b *trust.Bundle) error {
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	return renameio.WriteFile(f.path(rootsFile), b.PEM(), 0o644)
}

// newCSR returns a DER PKCS#10 request for key. The root decides every
// name and extension; it reads only the public key (and the proof of its
// possession) and, in an intermediate CSR, the serving names (DNS names and
// IPs) the issuer asks its intermediate to vouch for.
func newCSR(key crypto.Signer, commonName string, servingNames ...string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}
	for _, n := range servingNames {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("create %s request: %w", commonName, err)
	}
	return der, nil
}

// domainRoots returns the roots of td's own (not federated) entry in tb.
func domainRoots(tb *trust.TrustBundle, td spiffeid.TrustDomain) (*trust.Bundle, error) {
	d, ok := tb.Domain(td)
	if !ok || d.Federated {
		return nil, fmt.Errorf("the bundle has no roots of its own for trust domain %q", td.Name())
	}
	return d.Roots, nil
}

// domainAuthorities returns meshca's own CAs for td (DomainBundle.OwnCAs):
// what signs credentials directly. Under an upstream PKI they are not the
// roots, whose owner also vouches for certificates that are not meshca's.
func domainAuthorities(tb *trust.TrustBundle, td spiffeid.TrustDomain) (*trust.Bundle, error) {
	d, ok := tb.Domain(td)
	if !ok || d.Federated {
		return nil, fmt.Errorf("the bundle has no roots of its own for trust domain %q", td.Name())
	}
	return d.OwnCAs(), nil
}

func parseChain(ders [][]byte, what string) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, fmt.Errorf("%s: empty chain", what)
	}
	chain := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", what, i, err)
		}
		chain = append(chain, c)
	}
	return chain, nil
}

// verifyCredential checks a credential received from the root: a client
// certificate for key, naming exactly the credential ID of replica of the
// cluster, signed directly by one of tb's roots for td.
func verifyCredential(ders [][]byte, key crypto.Signer, tb *trust.TrustBundle, td spiffeid.TrustDomain, cluster, replica string, now time.Time) (*credential, error) {
	chain, err := parseChain(ders, "credential")
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	want, err := credentialID(td, cluster, replica)
	if err != nil {
		return nil, fmt.Errorf("credential: cluster %q: %w", cluster, err)
	}
	roots, err := domainAuthorities(tb, td)
	switch {
	case err != nil:
		return nil, fmt.Errorf("credential: %w", err)
	case len(chain) != 1:
		return nil, fmt.Errorf("credential: chain has %d certificates, want the credential alone (signed by a root)", len(chain))
	case leaf.IsCA:
		return nil, errors.New("credential: is a CA certificate")
	case !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return nil, errors.New("credential: lacks client authentication usage")
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != want.String():
		return nil, fmt.Errorf("credential: URI SANs %v, want exactly %s", leaf.URIs, want)
	case !keyutil.Equal(leaf.PublicKey, key.Public()):
		return nil, errors.New("credential: public key is not ours")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	return &credential{key: key, chain: chain, trustDomain: td, cluster: cluster, replica: replica}, nil
}

// verifyIntermediate checks an intermediate received from the root: a CA
// for key, constrained to exactly td, naming cluster's issuer (which
// meshca's clients require of this issuer), chaining to one of tb's roots for td
// and not outliving it. It returns the intermediate as an Authority.
func verifyIntermediate(ders [][]byte, key crypto.Signer, tb *trust.TrustBundle, td spiffeid.TrustDomain, cluster string, now time.Time) (*ca.Authority, error) {
	chain, err := parseChain(ders, "intermediate")
	if err != nil {
		return nil, err
	}
	cert := chain[0]
	roots, err := domainRoots(tb, td)
	switch {
	case err != nil:
		return nil, fmt.Errorf("intermediate: %w", err)
	case !cert.IsCA || !cert.BasicConstraintsValid:
		return nil, errors.New("intermediate: not a CA certificate")
	case len(cert.PermittedURIDomains) != 1 || cert.PermittedURIDomains[0] != td.Name():
		return nil, fmt.Errorf("intermediate: permits URI domains %q, want exactly %q", cert.PermittedURIDomains, td.Name())
	case !namesIssuer(cert, td, cluster):
		return nil, fmt.Errorf("intermediate: URI SANs %v do not name the issuer of cluster %q", cert.URIs, cluster)
	case !keyutil.Equal(cert.PublicKey, key.Public()):
		return nil, errors.New("intermediate: public key is not ours")
	}
	inters := x509.NewCertPool()
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots: roots.Pool(), Intermediates: inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	if root := chains[0][len(chains[0])-1]; cert.NotAfter.After(root.NotAfter) {
		return nil, fmt.Errorf("intermediate: expires after its root %q", root.Subject.CommonName)
	}
	return ca.NewAuthority(cert, key, chain[1:]...)
}

// namesIssuer reports whether CA certificate c names the issuer of cluster
// in td.
func namesIssuer(c *x509.Certificate, td spiffeid.TrustDomain, cluster string) bool {
	id, err := trust.IssuerServerID(td, cluster)
	return err == nil && len(c.URIs) == 1 && c.URIs[0].String() == id.String()
}
