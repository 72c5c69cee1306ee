package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strconv"
)

// keyInfo is what the Signer needs from a Transit key's configuration.
type keyInfo struct {
	Type                 string
	Exportable           bool
	AllowPlaintextBackup bool
	SupportsSigning      bool
	LatestVersion        int
	// PublicKeyPEM is the PKIX public key of LatestVersion.
	PublicKeyPEM string
}

// keyPath is the Transit path of the configured key.
func (s *Signer) keyPath() string {
	return s.cfg.Mount + "/keys/" + url.PathEscape(s.cfg.KeyName)
}

// loadKey reads the key, creating it non-exportable when it does not exist,
// checks that it is safe to use as a CA key and remembers the public key of
// its latest version.
func (s *Signer) loadKey(ctx context.Context) error {
	info, found, err := s.readKey(ctx)
	if err != nil {
		return err
	}
	if !found {
		body := map[string]any{"type": s.cfg.KeyType, "exportable": false, "allow_plaintext_backup": false}
		if _, err := s.call(ctx, s.keyPath(), body); err != nil {
			return fmt.Errorf("create key: %w", err)
		}
		if info, found, err = s.readKey(ctx); err != nil {
			return err
		}
		if !found {
			return errors.New("read key: not found right after creating it")
		}
	}
	if err := checkKey(info, s.cfg.KeyType); err != nil {
		return err
	}
	pub, err := parsePublicKey(info.PublicKeyPEM, s.cfg.KeyType)
	if err != nil {
		return fmt.Errorf("key version %d: %w", info.LatestVersion, err)
	}
	s.pub, s.version = pub, info.LatestVersion
	return nil
}

// readKey reads the key's configuration; found is false when it does not
// exist.
func (s *Signer) readKey(ctx context.Context) (keyInfo, bool, error) {
	secret, err := s.call(ctx, s.keyPath(), nil)
	if err != nil {
		return keyInfo{}, false, fmt.Errorf("read key: %w", err)
	}
	if secret == nil {
		return keyInfo{}, false, nil
	}
	info, err := parseKeyInfo(secret.Data)
	if err != nil {
		return keyInfo{}, false, fmt.Errorf("read key: %w", err)
	}
	return info, true, nil
}

// parseKeyInfo decodes the data of a transit/keys/NAME read.
func parseKeyInfo(data map[string]any) (keyInfo, error) {
	var raw struct {
		Type                 string `json:"type"`
		Exportable           bool   `json:"exportable"`
		AllowPlaintextBackup bool   `json:"allow_plaintext_backup"`
		SupportsSigning      bool   `json:"supports_signing"`
		LatestVersion        int    `json:"latest_version"`
		// Signing keys map versions to objects, others to timestamps.
		Keys map[string]json.RawMessage `json:"keys"`
	}
	b, err := json.Marshal(data)
	if err != nil {
		return keyInfo{}, fmt.Errorf("key data: %w", err)
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return keyInfo{}, fmt.Errorf("key data: %w", err)
	}
	if raw.LatestVersion < 1 {
		return keyInfo{}, fmt.Errorf("key data: latest version %d", raw.LatestVersion)
	}
	var latest struct {
		PublicKey string `json:"public_key"`
	}
	_ = json.Unmarshal(raw.Keys[strconv.Itoa(raw.LatestVersion)], &latest) // not an object: no public key
	return keyInfo{
		Type:                 raw.Type,
		Exportable:           raw.Exportable,
		AllowPlaintextBackup: raw.AllowPlaintextBackup,
		SupportsSigning:      raw.SupportsSigning,
		LatestVersion:        raw.LatestVersion,
		PublicKeyPEM:         latest.PublicKey,
	}, nil
}

// checkKey refuses a key that could leave Vault or that is not the
// configured signing key type.
func checkKey(info keyInfo, wantType string) error {
	switch {
	case info.Type != wantType:
		return fmt.Errorf("key has type %q, configured %q", info.Type, wantType)
	case info.Exportable:
		return errors.New("key is exportable: a CA key must never leave Vault (use a new, non-exportable key)")
	case info.AllowPlaintextBackup:
		return errors.New("key allows plaintext backup: a CA key must never leave Vault (use a new key)")
	case !info.SupportsSigning:
		return fmt.Errorf("key type %q does not support signing", info.Type)
	case info.PublicKeyPEM == "":
		return fmt.Errorf("key version %d has no public key", info.LatestVersion)
	}
	return nil
}

// parsePublicKey decodes a PEM PKIX public key and checks that it is of
// the given Transit key type.
func parsePublicKey(pemText, keyType string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("public key is not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	var ok bool
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = (keyType == KeyTypeECDSAP256 && k.Curve == elliptic.P256()) ||
			(keyType == KeyTypeECDSAP384 && k.Curve == elliptic.P384())
	case *rsa.PublicKey:
		ok = keyType == "rsa-"+strconv.Itoa(k.N.BitLen())
	}
	if !ok {
		return nil, fmt.Errorf("public key %T does not match key type %q", pub, keyType)
	}
	return pub, nil
}
