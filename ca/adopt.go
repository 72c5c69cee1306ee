package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/meshca/meshca/trust"
)

// AdoptFiles name an existing self-signed root and its key that a root
// service takes over as its first root: istiod's istio-ca-secret
// (ca-cert.pem, ca-key.pem with an RSA key in PKCS#1) or any other root an
// operator already trusts.
type AdoptFiles struct {
	// CertFile holds the root certificate alone (PEM). Required.
	CertFile string
	// KeyFile holds its private key (PEM: PKCS#8, SEC 1 or PKCS#1), not
	// accessible by group or others (LoadKeyFile). Required.
	KeyFile string
}

// Validate checks that both files are named.
func (f AdoptFiles) Validate() error {
	if f.CertFile == "" || f.KeyFile == "" {
		return errors.New("adopted root: certFile and keyFile are required")
	}
	return nil
}

// ReadAdoptedRootCert reads f.CertFile: exactly one certificate.
func ReadAdoptedRootCert(f AdoptFiles) (*x509.Certificate, error) {
	data, err := readBounded(f.CertFile)
	if err != nil {
		return nil, fmt.Errorf("adopted root: %w", err)
	}
	certs, err := trust.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("adopted root: %s: %w", f.CertFile, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("adopted root: %s holds %d certificates, want exactly the root", f.CertFile, len(certs))
	}
	return certs[0], nil
}

// LoadAdoptedRoot loads the root f names, as it is at now, and checks it:
// a self-signed CA (basic constraints) whose key usage allows certificate
// signing, whose path length leaves room for a cluster intermediate, that
// is valid at now and still at now+minRemaining, and whose key matches.
// Any failure is an error naming the file and the reason; nothing is
// returned then. A root that may not sign CRLs (istiod's) is accepted:
// meshca then publishes no CRL for it (MaySignCRLs).
func LoadAdoptedRoot(f AdoptFiles, now time.Time, minRemaining time.Duration) (*Authority, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	cert, err := ReadAdoptedRootCert(f)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s (%s)", f.CertFile, cert.Subject)
	switch {
	case !cert.IsCA || !cert.BasicConstraintsValid:
		return nil, fmt.Errorf("adopted root: %s is not a CA certificate", name)
	case !maySign(cert):
		return nil, fmt.Errorf("adopted root: %s: key usage lacks certificate signing", name)
	case !isSelfSigned(cert):
		return nil, fmt.Errorf("adopted root: %s is not self-signed: adopt a root, not an intermediate (an intermediate is the issuer's `intermediate:`)", name)
	case cert.MaxPathLen == 0 && cert.MaxPathLenZero:
		return nil, fmt.Errorf("adopted root: %s has path length 0: it cannot sign cluster intermediates", name)
	case now.Before(cert.NotBefore):
		return nil, fmt.Errorf("adopted root: %s is not valid before %s", name, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if left := cert.NotAfter.Sub(now); left < minRemaining {
		return nil, fmt.Errorf("adopted root: %s expires at %s, in %s: at least %s must be left", name,
			cert.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Second), minRemaining)
	}
	signer, err := LoadKeyFile(f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("adopted root: %w", err)
	}
	a, err := NewAuthority(cert, signer)
	if err != nil {
		return nil, fmt.Errorf("adopted root: %s and %s: %w", f.CertFile, f.KeyFile, err)
	}
	return a, nil
}
