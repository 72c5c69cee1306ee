package root

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/grpcx"
)

// Keys creates and loads root keys. A ref names a key in the store
// (store.Root.KeyRef); it is never secret.
type Keys interface {
	// NewKey creates a new key that no other ref names and returns its ref.
	NewKey(ctx context.Context) (ref string, signer crypto.Signer, err error)
	// Load returns the key named by ref. A signer that is an io.Closer is
	// closed by Root.Close.
	Load(ctx context.Context, ref string) (crypto.Signer, error)
}

// FileKeys keeps each root key in its own ECDSA P-256 PKCS#8 PEM file (mode
// 0600) in Dir (created 0700). The ref is the file name, relative to Dir.
type FileKeys struct {
	Dir string
}

var _ Keys = FileKeys{}

// NewKey implements Keys. It never overwrites an existing file.
func (k FileKeys) NewKey(context.Context) (string, crypto.Signer, error) {
	if k.Dir == "" {
		return "", nil, errors.New("file keys: directory is required")
	}
	suffix, err := randomHex(4)
	if err != nil {
		return "", nil, err
	}
	ref := fmt.Sprintf("root-%d-%s.key", time.Now().Unix(), suffix)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, fmt.Errorf("file keys: generate: %w", err)
	}
	block, err := pemutil.Serialize(key, pemutil.WithPKCS8(true))
	if err != nil {
		return "", nil, fmt.Errorf("file keys: encode: %w", err)
	}
	if err := os.MkdirAll(k.Dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("file keys: %w", err)
	}
	if err := writeNewFile(filepath.Join(k.Dir, ref), pem.EncodeToMemory(block)); err != nil {
		return "", nil, fmt.Errorf("file keys: %w", err)
	}
	return ref, key, nil
}

// Load implements Keys.
func (k FileKeys) Load(_ context.Context, ref string) (crypto.Signer, error) {
	if ref == "" || !filepath.IsLocal(ref) || filepath.Base(ref) != ref {
		return nil, fmt.Errorf("file keys: ref %q is not a file name", ref)
	}
	signer, err := ca.LoadKeyFile(filepath.Join(k.Dir, ref))
	if err != nil {
		return nil, fmt.Errorf("file keys: %w", err)
	}
	return signer, nil
}

// writeNewFile creates path (0600, failing if it exists), writes data and
// syncs it, so that a key that was handed out is on disk.
func writeNewFile(path string, data []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// vaultKeyPrefix is the ref prefix of Vault Transit keys: a ref is
// "vault:<key name>". It is never part of a key name.
const vaultKeyPrefix = "vault:"

// DefaultVaultKeyName starts the name of every new Vault Transit key when
// VaultKeys.Prefix is empty.
const DefaultVaultKeyName = "meshca-root"

// VaultKeys keeps each root key in its own Vault Transit key, created
// non-exportable by vault.New. The ref is "vault:<key name>".
type VaultKeys struct {
	// Config is the template for every key; its KeyName is replaced.
	Config vault.Config
	// Prefix starts every new key name, PREFIX-<unix time>-<random hex>;
	// empty means DefaultVaultKeyName.
	Prefix string
}

var _ Keys = VaultKeys{}

// NewKey implements Keys. The name carries the creation time and a random
// suffix: vault.New would silently reuse an existing key of the same name.
func (k VaultKeys) NewKey(ctx context.Context) (string, crypto.Signer, error) {
	prefix := cmp.Or(k.Prefix, DefaultVaultKeyName)
	suffix, err := randomHex(4)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("%s-%d-%s", prefix, time.Now().Unix(), suffix)
	signer, err := k.open(ctx, name)
	if err != nil {
		return "", nil, err
	}
	return vaultKeyPrefix + name, signer, nil
}

// Load implements Keys.
func (k VaultKeys) Load(ctx context.Context, ref string) (crypto.Signer, error) {
	name, ok := strings.CutPrefix(ref, vaultKeyPrefix)
	if !ok || name == "" {
		return nil, fmt.Errorf("vault keys: ref %q does not name a Vault key", ref)
	}
	return k.open(ctx, name)
}

func (k VaultKeys) open(ctx context.Context, name string) (crypto.Signer, error) {
	cfg := k.Config
	cfg.KeyName = name
	s, err := vault.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("vault keys: %w: %w", grpcx.ErrUnavailable, err)
	}
	return s, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
