package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"syscall"

	"github.com/google/renameio/v2"
	"go.step.sm/crypto/pemutil"
)

// LoadOrCreateKeyFile returns the private key stored at path as a PKCS#8 PEM
// block, creating a new ECDSA P-256 key there (mode 0600, parent directory
// 0700) when the file does not exist. It refuses a key file that is readable
// by group or others, and a key that is not a crypto.Signer.
//
// The key file is the embedded default for the root CA; production
// deployments keep the root key in Vault instead.
func LoadOrCreateKeyFile(path string) (crypto.Signer, error) {
	signer, err := LoadKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return signer, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	block, err := pemutil.Serialize(key, pemutil.WithPKCS8(true))
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	if err := renameio.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("write key file: %w", err)
	}
	return key, nil
}

// LoadKeyFile reads a PEM private key (PKCS#8, SEC 1 or PKCS#1) from path.
// The error wraps fs.ErrNotExist when the file is missing. The file must
// not be accessible by group or others, with one exception (see
// platformSecret): a read-only file that root owns and that only its
// group may also read, which is how the kubelet hands a Kubernetes Secret
// to a non-root container.
func LoadKeyFile(path string) (crypto.Signer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 && !platformSecret(info, os.Geteuid()) {
		return nil, fmt.Errorf("key file %s has mode %v: it must not be accessible by group or others (chmod 600)", path, info.Mode().Perm())
	}
	key, err := pemutil.Read(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key file %s: %T is not a signing key", path, key)
	}
	return signer, nil
}

// platformSecret reports whether info is a key file the platform provides
// read-only to a process running as euid, not root: owned by root, readable
// by root and by its group only (mode 0440 or 0400 under it, nothing
// writable). The kubelet mounts a Secret so for a non-root container with
// an fsGroup (the owner cannot be chosen), and only the pod's processes
// are in that group.
func platformSecret(info fs.FileInfo, euid int) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && euid != 0 && st.Uid == 0 && info.Mode().Perm()&^0o440 == 0
}
