package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is what one test cluster needs: a CA that signs the serving and the
// admin client certificates, and the service-account token signing key.
type pki struct {
	caCert                 *x509.Certificate
	caKey                  *ecdsa.PrivateKey
	caPEM                  []byte
	adminCert, adminKey    []byte // PEM
	servingCert, servingKy string // file paths
	caFile, saKeyFile      string
	adminFile, adminKyFile string // the admin certificate and key, for the API server's calls to kubelets
}

// newPKI writes the cluster's keys and certificates into dir. Every cluster
// gets its own CA and its own service-account key, so tokens of one
// cluster never verify in another.
func newPKI(dir, name string) (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest CA " + name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("kubetest CA: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &pki{caCert: caCert, caKey: caKey, caPEM: pemBlock("CERTIFICATE", caDER)}

	servingCert, servingKey, err := leaf(caCert, caKey, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost", "kubernetes.default.svc"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	// O=system:masters makes the admin cluster-admin without any RBAC.
	if p.adminCert, p.adminKey, err = leaf(caCert, caKey, &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "kubetest-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	p.caFile = filepath.Join(dir, "ca.pem")
	p.servingCert = filepath.Join(dir, "serving.pem")
	p.servingKy = filepath.Join(dir, "serving-key.pem")
	p.saKeyFile = filepath.Join(dir, "sa-key.pem")
	p.adminFile, p.adminKyFile = filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin-key.pem")
	for path, data := range map[string][]byte{
		p.caFile: p.caPEM, p.servingCert: servingCert, p.servingKy: servingKey,
		p.adminFile: p.adminCert, p.adminKyFile: p.adminKey,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	if err := newSigningKey(p.saKeyFile); err != nil {
		return nil, err
	}
	return p, nil
}

// ClientCert returns a new client certificate and its key (PEM), signed by
// the cluster's CA, for user cn in groups: how a kubelet
// (system:node:NAME in system:nodes) or a controller authenticates.
func (c *Cluster) ClientCert(cn string, groups ...string) (certPEM, keyPEM []byte, err error) {
	return c.pki.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// ServingCert returns a new TLS serving certificate and its key (PEM),
// signed by the cluster's CA, for the given names and IP addresses.
func (c *Cluster) ServingCert(cn string, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	return c.pki.issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, DNSNames: dnsNames, IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// issue signs tmpl with a random serial number.
func (p *pki) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return nil, nil, err
	}
	return leaf(p.caCert, p.caKey, tmpl)
}

// newSigningKey writes a new ECDSA P-256 service-account signing key (ES256
// tokens) to path.
func newSigningKey(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pemBlock("EC PRIVATE KEY", der), 0o600)
}

// leaf signs tmpl (filled with validity and usage) with a new P-256 key and
// returns the certificate and key as PEM.
func leaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = ca.NotBefore, ca.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("kubetest %s certificate: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
