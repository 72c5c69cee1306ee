package testkit

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// Istio's file names, in its istio-ca-secret and cacerts Secrets
// (security/pkg/pki/ca/ca.go of istio.io/istio).
const (
	IstioCACertFile    = "ca-cert.pem"
	IstioCAKeyFile     = "ca-key.pem"
	IstioCertChainFile = "cert-chain.pem"
	IstioRootCertFile  = "root-cert.pem"
)

// IstioRoot returns a self-signed root of the shape istiod creates for its
// istio-ca-secret (security/pkg/pki/util.GenCertKeyFromOptions with IsCA,
// IsSelfSigned and Org set to the trust domain): an RSA-2048 key, subject
// O=org alone, key usage certificate signing alone (no CRL signing), basic
// constraints without a path length, NotBefore now. The key is keyName's
// cached RSA key; keyPEM is it in PKCS#1, as istiod writes ca-key.pem.
func IstioRoot(tb testing.TB, keyName, org string, now time.Time, ttl time.Duration) (root *ca.Authority, keyPEM []byte) {
	tb.Helper()
	key := rsaKey(tb, keyName)
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb), Subject: pkix.Name{Organization: []string{org}},
		NotBefore: now, NotAfter: now.Add(ttl),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
	}
	cert := Certificate(tb, tmpl, tmpl, key.Public(), key)
	a, err := ca.NewAuthority(cert, key)
	if err != nil {
		tb.Fatal(err)
	}
	return a, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

// IstioIntermediate returns a plug-in intermediate CA of the shape Istio's
// tools/certs makes for the cacerts Secret (common.mk, intermediate
// section): an RSA-2048 key (keyName's cached one), O=Istio CN=Intermediate
// CA, DNS SAN istiod.istio-system.svc, path length 0, key usage digital
// signature, key encipherment and certificate signing (no CRL signing),
// valid from notBefore to notAfter, signed by parent.
func IstioIntermediate(tb testing.TB, parent *ca.Authority, keyName string, notBefore, notAfter time.Time) *ca.Authority {
	tb.Helper()
	key := rsaKey(tb, keyName)
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb), Subject: pkix.Name{Organization: []string{"Istio"}, CommonName: "Intermediate CA"},
		NotBefore: notBefore, NotAfter: notAfter, DNSNames: []string{"istiod.istio-system.svc"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		IsCA:     true, BasicConstraintsValid: true, MaxPathLenZero: true,
	}
	cert := Certificate(tb, tmpl, parent.Certificate, key.Public(), parent.Signer)
	var above []*x509.Certificate // Authority.Chain leaves the root out
	if !bytes.Equal(parent.Certificate.RawSubject, parent.Certificate.RawIssuer) {
		above = append([]*x509.Certificate{parent.Certificate}, parent.Chain...)
	}
	a, err := ca.NewAuthority(cert, key, above...)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// WriteCACerts writes Istio's cacerts files for inter into dir and returns
// their paths: ca-cert.pem (inter), ca-key.pem (its key, PKCS#1 for RSA,
// mode 0600), cert-chain.pem (inter, the CAs above it and root, as Istio's
// tools write it) and root-cert.pem (root).
func WriteCACerts(tb testing.TB, dir string, inter *ca.Authority, root *x509.Certificate) ca.PluggedFiles {
	tb.Helper()
	f := ca.PluggedFiles{
		CertFile: filepath.Join(dir, IstioCACertFile), KeyFile: filepath.Join(dir, IstioCAKeyFile),
		ChainFile: filepath.Join(dir, IstioCertChainFile), RootFile: filepath.Join(dir, IstioRootCertFile),
	}
	var keyDER []byte
	blockType := "RSA PRIVATE KEY"
	if k, ok := inter.Signer.(*rsa.PrivateKey); ok {
		keyDER = x509.MarshalPKCS1PrivateKey(k)
	} else {
		var err error
		if keyDER, err = x509.MarshalPKCS8PrivateKey(inter.Signer); err != nil {
			tb.Fatal(err)
		}
		blockType = "PRIVATE KEY"
	}
	chain := append([]*x509.Certificate{inter.Certificate}, inter.Chain...)
	if len(inter.Chain) == 0 || !inter.Chain[len(inter.Chain)-1].Equal(root) {
		chain = append(chain, root)
	}
	for path, data := range map[string][]byte{
		f.CertFile: trust.EncodeCertificates(inter.Certificate), f.ChainFile: trust.EncodeCertificates(chain...),
		f.RootFile: trust.EncodeCertificates(root), f.KeyFile: pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: keyDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

// rsaKey returns the cached RSA-2048 key named name.
func rsaKey(tb testing.TB, name string) *rsa.PrivateKey {
	tb.Helper()
	k := cachedKey(tb, " rsa2048 "+name, func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	return k.(*rsa.PrivateKey)
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
