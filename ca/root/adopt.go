package root

import (
	"cmp"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/store"
)

// Adopting an existing root.
//
// An operator moving from another CA (istiod's self-signed root, above all)
// to meshca without downtime lets the root service take that root over as
// its first root: the root signs the cluster intermediates, so every
// relying party that trusts it keeps verifying, and the next rotation
// (meshca admin root rotate) creates a meshca root cross-signed with it, so
// that relying parties anchored on either one verify the other's leaves
// while both are in the bundle.

// DefaultAdoptMinRemaining is AdoptRoot.MinRemaining when zero.
const DefaultAdoptMinRemaining = 30 * 24 * time.Hour

// AdoptRoot is Config.Adopt.
type AdoptRoot struct {
	ca.AdoptFiles
	// MinRemaining is the life the root must have left when adopted; zero
	// means DefaultAdoptMinRemaining.
	MinRemaining time.Duration
}

// KeyImporter is an optional capability of Keys: keeping a key that exists
// already, an adopted root's.
type KeyImporter interface {
	// ImportKey stores key and returns its ref. Importing the same key
	// again returns the same ref.
	ImportKey(ctx context.Context, key crypto.Signer) (ref string, err error)
}

var _ KeyImporter = FileKeys{}

func (a *AdoptRoot) validate(c Config) error {
	if a == nil {
		return nil
	}
	if err := a.AdoptFiles.Validate(); err != nil {
		return fmt.Errorf("root server: %w", err)
	}
	if a.MinRemaining < 0 {
		return fmt.Errorf("root server: adopted root: negative minimum remaining life %v", a.MinRemaining)
	}
	if c.Upstream != nil {
		return errors.New("root server: an adopted root and an upstream PKI exclude each other: under an upstream the upstream's root is the anchor")
	}
	if _, ok := c.Keys.(KeyImporter); !ok {
		return fmt.Errorf("root server: adopting a root needs file keys: its key cannot be imported into %T "+
			"(a Vault Transit key is created inside Vault and never leaves it)", c.Keys)
	}
	return nil
}

// adoptRootLocked loads and checks the root Config.Adopt names, copies its
// key into the key store and records the root, active at once. Nothing is
// recorded when a check fails; a key copied before a failed store write is
// found again (same ref) by the next attempt.
func (r *Root) adoptRootLocked(ctx context.Context) (RootRecord, error) {
	now := r.cfg.Now()
	adopt := r.cfg.Adopt
	a, err := ca.LoadAdoptedRoot(adopt.AdoptFiles, now, cmp.Or(adopt.MinRemaining, DefaultAdoptMinRemaining))
	if err != nil {
		return RootRecord{}, err
	}
	if err := verifySelfSigned(a.Certificate, now); err != nil {
		return RootRecord{}, fmt.Errorf("adopted root: %w", err)
	}
	ref, err := r.cfg.Keys.(KeyImporter).ImportKey(ctx, a.Signer)
	if err != nil {
		return RootRecord{}, fmt.Errorf("adopted root: copy its key: %w", err)
	}
	rec := RootRecord{Cert: a.Certificate, KeyRef: ref, AddedAt: now.UTC().Truncate(time.Second)}
	rec.ActivateAt = rec.AddedAt
	fp := fingerprintHex(rec.Cert)
	err = r.cfg.Store.AddRoot(ctx, store.Root{Fingerprint: fp, DER: rootDER(rec), KeyRef: ref, AddedAt: rec.AddedAt, ActivateAt: rec.ActivateAt},
		store.AuditEvent{Time: now, Actor: "system:root-init", Action: "root.adopt",
			Detail: fmt.Sprintf("adopted root sha256 %s (%s) from %s, key %s, not after %s", fp, rec.Cert.Subject, adopt.CertFile, ref,
				rec.Cert.NotAfter.UTC().Format(time.RFC3339))})
	if err != nil {
		return RootRecord{}, fmt.Errorf("record adopted root: %w", err)
	}
	if rec.Cert.MaxPathLen == 1 {
		r.log.WarnContext(ctx, "the adopted root has path length 1: a cross certificate and an intermediate below it do not fit, "+
			"so during a rotation away from it only the bundle's roots link the generations", "sha256", fp)
	}
	return rec, nil
}

// checkAdoptedAmong checks, for a store that holds roots already, that the
// root Config.Adopt names is one of them: adoption happens once, into an
// empty store.
func checkAdoptedAmong(adopt *AdoptRoot, rows []store.Root) error {
	cert, err := ca.ReadAdoptedRootCert(adopt.AdoptFiles)
	if err != nil {
		return err
	}
	fp := fingerprintHex(cert)
	for _, row := range rows {
		if row.Fingerprint == fp {
			return nil
		}
	}
	return fmt.Errorf("adopted root: %s (sha256 %s) is not among the %d roots in the store: a root is adopted only into a store "+
		"without roots; remove adoptRoot from the configuration to keep the recorded roots", adopt.CertFile, fp, len(rows))
}

// ImportKey implements KeyImporter: the key is written as PKCS#8 PEM (mode
// 0600, Dir 0700) under a name derived from its public key,
// root-adopted-<hex>.key; a file of that name holding the same key is
// reused, one holding another key is an error.
func (k FileKeys) ImportKey(ctx context.Context, key crypto.Signer) (string, error) {
	if k.Dir == "" {
		return "", errors.New("file keys: directory is required")
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", fmt.Errorf("file keys: public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	ref := "root-adopted-" + hex.EncodeToString(sum[:8]) + ".key"
	if have, err := k.Load(ctx, ref); err == nil {
		if !keyutil.Equal(have.Public(), key.Public()) {
			return "", fmt.Errorf("file keys: %s holds another key", ref)
		}
		return ref, nil
	} else if _, serr := os.Stat(filepath.Join(k.Dir, ref)); serr == nil {
		return "", err
	}
	block, err := pemutil.Serialize(key, pemutil.WithPKCS8(true))
	if err != nil {
		return "", fmt.Errorf("file keys: encode: %w", err)
	}
	if err := os.MkdirAll(k.Dir, 0o700); err != nil {
		return "", fmt.Errorf("file keys: %w", err)
	}
	if err := writeNewFile(filepath.Join(k.Dir, ref), pem.EncodeToMemory(block)); err != nil {
		return "", fmt.Errorf("file keys: %w", err)
	}
	return ref, nil
}
