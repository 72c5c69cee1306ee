package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/trust"
)

// File names used by LoadOrCreateFileRoot inside its directory.
const (
	RootKeyFile  = "root-key.pem"
	RootCertFile = "root.pem"
)

// FileRootConfig describes a root CA kept in files: the embedded default.
type FileRootConfig struct {
	// Dir holds root-key.pem (PKCS#8, 0600) and root.pem. Required.
	Dir string
	// CommonName and TTL apply only when a new root certificate is made;
	// see RootConfig for their defaults.
	CommonName string
	TTL        time.Duration
	// Now is the current time; zero means time.Now().
	Now time.Time
}

// ErrNoFileRoot is returned by LoadFileRoot for a directory without a root
// certificate.
var ErrNoFileRoot = errors.New("no root certificate")

// LoadOrCreateFileRoot loads the root CA kept in cfg.Dir, creating the key
// and a self-signed certificate on first use, so that restarting on the same
// directory keeps the same root. It refuses a certificate that does not match
// the key or that has expired, rather than silently minting a new root that
// every workload would distrust.
func LoadOrCreateFileRoot(cfg FileRootConfig) (*Authority, error) {
	root, err := LoadFileRoot(cfg)
	if !errors.Is(err, ErrNoFileRoot) {
		return root, err
	}
	keyPath := filepath.Join(cfg.Dir, RootKeyFile)
	if _, statErr := os.Stat(keyPath); statErr != nil && !errors.Is(statErr, fs.ErrNotExist) {
		return nil, fmt.Errorf("file root: %w", statErr)
	}
	signer, err := LoadOrCreateKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("file root: %w", err)
	}
	root, err = NewRoot(RootConfig{Signer: signer, CommonName: cfg.CommonName, TTL: cfg.TTL, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("file root: %w", err)
	}
	certPath := filepath.Join(cfg.Dir, RootCertFile)
	if err := renameio.WriteFile(certPath, trust.EncodeCertificates(root.Certificate), 0o644); err != nil {
		return nil, fmt.Errorf("file root: write certificate: %w", err)
	}
	return root, nil
}

// LoadFileRoot loads the root CA kept in cfg.Dir and creates nothing, so it
// works on a read-only directory such as a mounted Kubernetes Secret. A
// directory without root.pem gives an error wrapping ErrNoFileRoot; a
// certificate without its key, one that does not match the key, or one that
// has expired is refused. CommonName and TTL are not used.
func LoadFileRoot(cfg FileRootConfig) (*Authority, error) {
	if cfg.Dir == "" {
		return nil, errors.New("file root: directory is required")
	}
	now := cfg.Now
	if now.IsZero() {
		now = time.Now()
	}
	keyPath := filepath.Join(cfg.Dir, RootKeyFile)
	certPath := filepath.Join(cfg.Dir, RootCertFile)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("file root: %s: %w", certPath, ErrNoFileRoot)
	case err != nil:
		return nil, fmt.Errorf("file root: %w", err)
	}
	cert, err := pemutil.ParseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("file root: %s: %w", certPath, err)
	}
	signer, err := LoadKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("file root: %s exists but its key cannot be loaded: %w", certPath, err)
	}
	root, err := NewAuthority(cert, signer)
	if err != nil {
		return nil, fmt.Errorf("file root: %w", err)
	}
	if !now.Before(cert.NotAfter) {
		return nil, fmt.Errorf("file root: %w: %s expired at %s", ErrCAExpired, certPath, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return root, nil
}
