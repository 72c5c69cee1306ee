package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/meshca/meshca/trust"
)

// maxPluggedFileSize bounds each file of a plugged CA: a few certificates
// or one key are a few kilobytes.
const maxPluggedFileSize = 1 << 20

// PluggedFiles locate an intermediate CA that someone else issued and
// keeps, laid out as Istio's plug-in CA Secret `cacerts`: meshca signs
// with it but holds no key above it, so it cannot renew it.
type PluggedFiles struct {
	// CertFile holds the intermediate's certificate, one PEM certificate
	// (Istio: ca-cert.pem). Required.
	CertFile string
	// KeyFile holds its private key: PKCS#8, SEC 1 or PKCS#1 PEM, not
	// readable by group or others (Istio: ca-key.pem). Required.
	KeyFile string
	// ChainFile holds the certificates from the intermediate up to a root
	// (Istio: cert-chain.pem). It may start with the intermediate itself
	// and end with the root; what lies between must be exactly the path
	// to the root, nearest first. Empty means the intermediate is signed
	// directly by a root.
	ChainFile string
	// RootFile holds the self-signed root(s) relying parties trust
	// (Istio: root-cert.pem). Required.
	RootFile string
}

// Validate reports the first missing file name; it does not change f.
func (f PluggedFiles) Validate() error {
	switch {
	case f.CertFile == "":
		return errors.New("plugged CA: certificate file is required")
	case f.KeyFile == "":
		return errors.New("plugged CA: key file is required")
	case f.RootFile == "":
		return errors.New("plugged CA: root file is required")
	}
	return nil
}

// Read returns the contents of the files, in the order cert, key, chain,
// root (chain empty when ChainFile is), each bounded in size. Comparing two
// reads tells whether the files changed.
func (f PluggedFiles) Read() ([4][]byte, error) {
	var out [4][]byte
	for i, p := range []string{f.CertFile, f.KeyFile, f.ChainFile, f.RootFile} {
		if p == "" {
			continue
		}
		data, err := readBounded(p)
		if err != nil {
			return out, fmt.Errorf("plugged CA: %w", err)
		}
		out[i] = data
	}
	return out, nil
}

func readBounded(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxPluggedFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxPluggedFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPluggedFileSize)
	}
	return data, nil
}

// PluggedCA is an intermediate CA loaded from PluggedFiles: its Authority
// (Chain holds the CAs between it and the root, nearest first) and the
// roots of RootFile.
type PluggedCA struct {
	Authority *Authority
	Roots     []*x509.Certificate
}

// LoadPluggedCA loads and checks the files f names, as they are at now.
// Checked: the key matches the certificate; the certificate is a CA that
// may sign certificates (basic constraints, key usage); every root of
// RootFile is a self-signed CA; the certificate chains through ChainFile,
// which holds exactly that path, to one of them at now, path lengths and
// name constraints of the chain included (crypto/x509); every CA of the
// path may sign certificates; and the certificate is still valid at
// now+minRemaining. Any failure is an error naming the file and the
// reason; nothing is returned then.
func LoadPluggedCA(f PluggedFiles, now time.Time, minRemaining time.Duration) (*PluggedCA, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	data, err := f.Read()
	if err != nil {
		return nil, err
	}
	certs, err := trust.ParseCertificates(data[0])
	if err != nil {
		return nil, fmt.Errorf("plugged CA: %s: %w", f.CertFile, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("plugged CA: %s holds %d certificates, want exactly the intermediate", f.CertFile, len(certs))
	}
	cert := certs[0]
	signer, err := LoadKeyFile(f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("plugged CA: %w", err)
	}
	if _, err := NewAuthority(cert, signer); err != nil {
		return nil, fmt.Errorf("plugged CA: %s and %s: %w", f.CertFile, f.KeyFile, err)
	}
	if !maySign(cert) {
		return nil, fmt.Errorf("plugged CA: %s (%s): key usage lacks certificate signing", f.CertFile, cert.Subject)
	}
	roots, err := parseRoots(f.RootFile, data[3])
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	if f.ChainFile != "" {
		if chain, err = trust.ParseCertificates(data[2]); err != nil {
			return nil, fmt.Errorf("plugged CA: %s: %w", f.ChainFile, err)
		}
	}
	path, root, err := verifyPluggedPath(f, cert, pathBetween(cert, chain), roots, now)
	if err != nil {
		return nil, err
	}
	// An operator's intermediate may outlive its root (Istio's tools/certs
	// gives both the same lifetime): what it signs ends with the earliest
	// certificate of its path, and so does its usable life.
	end := cert
	for _, c := range append(slices.Clone(path), root) {
		if c.NotAfter.Before(end.NotAfter) {
			end = c
		}
	}
	if left := end.NotAfter.Sub(now); left < minRemaining {
		return nil, fmt.Errorf("plugged CA: %s (%s) expires at %s, in %s: at least %s must be left",
			f.CertFile, end.Subject, end.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Second), minRemaining)
	}
	a, err := NewAuthority(cert, signer, path...)
	if err != nil {
		return nil, fmt.Errorf("plugged CA: %w", err)
	}
	a.Until = end.NotAfter
	return &PluggedCA{Authority: a, Roots: roots}, nil
}

// parseRoots parses the roots of file and checks that each is a
// self-signed CA.
func parseRoots(file string, data []byte) ([]*x509.Certificate, error) {
	roots, err := trust.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("plugged CA: %s: %w", file, err)
	}
	for _, r := range roots {
		if !r.IsCA || !r.BasicConstraintsValid || !isSelfSigned(r) {
			return nil, fmt.Errorf("plugged CA: %s: %s is not a self-signed CA certificate", file, r.Subject)
		}
	}
	return roots, nil
}

// pathBetween returns chain without a leading copy of cert and without
// trailing self-signed certificates (the root, which Istio's
// cert-chain.pem usually ends with).
func pathBetween(cert *x509.Certificate, chain []*x509.Certificate) []*x509.Certificate {
	if len(chain) > 0 && chain[0].Equal(cert) {
		chain = chain[1:]
	}
	for len(chain) > 0 && isSelfSigned(chain[len(chain)-1]) {
		chain = chain[:len(chain)-1]
	}
	return chain
}

// verifyPluggedPath verifies cert up to roots through inters at now and
// requires inters to be exactly the CAs of one verified path, each allowed
// to sign certificates. It returns that path without cert and the root,
// and the root it reached.
func verifyPluggedPath(f PluggedFiles, cert *x509.Certificate, inters, roots []*x509.Certificate, now time.Time) ([]*x509.Certificate, *x509.Certificate, error) {
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range inters {
		interPool.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: interPool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("plugged CA: %s does not chain through %s to a root of %s at %s: %w",
			f.CertFile, orNone(f.ChainFile), f.RootFile, now.UTC().Format(time.RFC3339), err)
	}
	for _, c := range chains {
		if len(c) < 2 {
			// cert is itself one of the roots: a self-signed CA is not an
			// intermediate, and nothing would sit above the leaves it signs.
			return nil, nil, fmt.Errorf("plugged CA: %s is a root of %s, not an intermediate below one", f.CertFile, f.RootFile)
		}
		mid := c[1 : len(c)-1]
		if !slices.EqualFunc(mid, inters, (*x509.Certificate).Equal) {
			continue
		}
		for _, ca := range mid {
			if !maySign(ca) {
				return nil, nil, fmt.Errorf("plugged CA: %s: %s: key usage lacks certificate signing", f.ChainFile, ca.Subject)
			}
		}
		// crypto/x509 verified cert as an end entity; it signs certificates,
		// so every CA above counts it among the CAs below itself.
		for i, above := range c[1:] {
			if above.MaxPathLen >= 0 && i+1 > above.MaxPathLen {
				return nil, nil, fmt.Errorf("plugged CA: %s (path length %d) admits %d CA(s) below it, but %s is CA number %d below it",
					above.Subject, above.MaxPathLen, above.MaxPathLen, f.CertFile, i+1)
			}
		}
		return slices.Clone(mid), c[len(c)-1], nil
	}
	return nil, nil, fmt.Errorf("plugged CA: %s holds %d certificate(s) between %s and the root that are not its path to a root of %s",
		orNone(f.ChainFile), len(inters), f.CertFile, f.RootFile)
}

// maySign reports whether CA certificate c may sign certificates by its key
// usage (absent key usage allows everything, RFC 5280 4.2.1.3).
func maySign(c *x509.Certificate) bool {
	return c.KeyUsage == 0 || c.KeyUsage&x509.KeyUsageCertSign != 0
}

// MaySignCRLs reports whether CA certificate c may sign CRLs by its key
// usage: istiod's self-signed root (istio-ca-secret) may not, its key usage
// being certificate signing alone.
func MaySignCRLs(c *x509.Certificate) bool {
	return c.KeyUsage == 0 || c.KeyUsage&x509.KeyUsageCRLSign != 0
}

func orNone(file string) string {
	if file == "" {
		return "no chain file"
	}
	return file
}
