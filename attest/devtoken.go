package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
)

// DevIssuer is the "iss" of tokens minted by a [DevSigner]. The .invalid TLD
// guarantees it can never be a real API server's issuer.
const DevIssuer = "https://meshca.dev.invalid"

// devKeyFile is the name of the dev signer's key inside its directory.
const devKeyFile = "dev-token-key.pem"

// DevSigner mints Kubernetes-style projected service-account tokens for
// development and tests, so that meshca can be exercised without a cluster.
// It must never be trusted in production: anyone who can read its key file
// can mint any identity. A DevSigner is safe for concurrent use.
type DevSigner struct {
	key    *ecdsa.PrivateKey
	kid    string
	signer jose.Signer
}

// LoadOrCreateDevSigner returns the signer whose ECDSA P-256 key is stored
// as PKCS#8 PEM in dir/dev-token-key.pem, creating dir (mode 0700) and the
// key (mode 0600) if they do not exist, so that tokens and trust survive a
// restart. The key file is written atomically: a crash leaves either no key
// or a whole one. An existing file that is not a P-256 key is an error, never
// overwritten.
func LoadOrCreateDevSigner(dir string) (*DevSigner, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create dev signer dir: %w", err)
	}
	path := filepath.Join(dir, devKeyFile)
	key, err := readDevKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createDevKey(path)
	}
	if err != nil {
		return nil, err
	}
	return newDevSigner(key)
}

// LoadDevSigner returns the signer whose key LoadOrCreateDevSigner stored in
// dir, creating nothing: a token minted with a new key would only be
// refused by the server that trusts the existing one. The error wraps
// fs.ErrNotExist when dir holds no key.
func LoadDevSigner(dir string) (*DevSigner, error) {
	key, err := readDevKey(filepath.Join(dir, devKeyFile))
	if err != nil {
		return nil, err
	}
	return newDevSigner(key)
}

func readDevKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read dev signer key: %w", err)
	}
	k, err := pemutil.Parse(b, pemutil.WithFilename(path))
	if err != nil {
		return nil, fmt.Errorf("parse dev signer key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("dev signer key %s: want an ECDSA P-256 private key, got %T", path, k)
	}
	return ec, nil
}

func createDevKey(path string) (*ecdsa.PrivateKey, error) {
	k, err := keyutil.GenerateKey("EC", "P-256", 0)
	if err != nil {
		return nil, fmt.Errorf("generate dev signer key: %w", err)
	}
	block, err := pemutil.Serialize(k, pemutil.WithPKCS8(true))
	if err != nil {
		return nil, fmt.Errorf("encode dev signer key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(block)); err != nil {
		return nil, fmt.Errorf("write dev signer key: %w", err)
	}
	return k.(*ecdsa.PrivateKey), nil
}

// writeFileAtomic writes data to path with mode 0600 via a temporary file in
// the same directory and a rename, so readers never see a partial file.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	// CreateTemp already uses 0600; Chmod makes the contract independent of it.
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Persist the rename itself; not all platforms can sync a directory.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func newDevSigner(key *ecdsa.PrivateKey) (*DevSigner, error) {
	pub := jose.JSONWebKey{Key: &key.PublicKey}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("dev signer key id: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.ES256,
		Key:       jose.JSONWebKey{Key: key, KeyID: kid},
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("dev signer: %w", err)
	}
	return &DevSigner{key: key, kid: kid, signer: signer}, nil
}

// keyID returns the signer's "kid": the RFC 7638 SHA-256 thumbprint of its
// public key, base64url-encoded.
func (d *DevSigner) keyID() string { return d.kid }

// KeySet returns a new key set holding only the signer's public key, suitable
// for [StaticKeys] with [DevIssuer].
func (d *DevSigner) KeySet() *jose.JSONWebKeySet {
	return &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key:       &d.key.PublicKey,
		KeyID:     d.kid,
		Algorithm: string(jose.ES256),
		Use:       "sig",
	}}}
}

// TokenSpec describes a token to mint.
type TokenSpec struct {
	// Namespace and ServiceAccount name the identity; both are required and
	// must be DNS-1123 labels.
	Namespace      string
	ServiceAccount string
	// ServiceAccountUID is the "kubernetes.io" serviceaccount uid. Empty
	// means a UUID derived from Namespace and ServiceAccount, stable across
	// mints as a real service account's would be.
	ServiceAccountUID string
	// Audiences is the "aud" claim. Empty means ["meshca"].
	Audiences []string
	// TTL is the token lifetime. Zero means one hour; negative is an error.
	TTL time.Duration
	// PodName and PodUID bind the token to a pod. Both or neither.
	PodName string
	PodUID  string
	// Now is the issue time (iat and nbf). Zero means time.Now().
	Now time.Time
}

// Mint returns a compact ES256 JWS with the header {alg, kid} and the claim
// layout of a Kubernetes projected service-account token: iss (DevIssuer),
// sub, aud, exp, nbf, iat, jti and kubernetes.io {namespace,
// serviceaccount{name,uid}, pod{name,uid}}.
func (d *DevSigner) Mint(spec TokenSpec) (string, error) {
	if err := spec.validate(); err != nil {
		return "", fmt.Errorf("mint dev token: %w", err)
	}
	now := spec.Now
	if now.IsZero() {
		now = time.Now()
	}
	ttl := spec.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	aud := slices.Clone(spec.Audiences)
	if len(aud) == 0 {
		aud = []string{"meshca"}
	}
	saUID := spec.ServiceAccountUID
	if saUID == "" {
		saUID = uuid.NewSHA1(devUIDNamespace, []byte(spec.Namespace+"/"+spec.ServiceAccount)).String()
	}
	k8s := &k8sClaim{
		Namespace:      spec.Namespace,
		ServiceAccount: &objRef{Name: spec.ServiceAccount, UID: saUID},
	}
	if spec.PodName != "" {
		k8s.Pod = &objRef{Name: spec.PodName, UID: spec.PodUID}
	}
	c := tokenClaims{
		Issuer:     DevIssuer,
		Subject:    subjectPrefix + spec.Namespace + ":" + spec.ServiceAccount,
		Audience:   aud,
		Expiry:     jwt.NewNumericDate(now.Add(ttl)),
		NotBefore:  jwt.NewNumericDate(now),
		IssuedAt:   jwt.NewNumericDate(now),
		ID:         uuid.NewString(),
		Kubernetes: k8s,
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint dev token: %w", err)
	}
	jws, err := d.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("mint dev token: %w", err)
	}
	return jws.CompactSerialize()
}

// devUIDNamespace seeds derived service-account UIDs (a random constant).
var devUIDNamespace = uuid.MustParse("5b0c6d1e-8f0a-4c7e-9a51-3f2d8e6b4a10")

func (s *TokenSpec) validate() error {
	switch {
	case !isDNS1123Label(s.Namespace):
		return fmt.Errorf("invalid namespace %q", s.Namespace)
	case !isDNS1123Label(s.ServiceAccount):
		return fmt.Errorf("invalid service account name %q", s.ServiceAccount)
	case s.TTL < 0:
		return fmt.Errorf("negative ttl %s", s.TTL)
	case (s.PodName == "") != (s.PodUID == ""):
		return errors.New("pod name and uid must be set together")
	case s.PodName != "" && !isDNS1123Subdomain(s.PodName):
		return fmt.Errorf("invalid pod name %q", s.PodName)
	case slices.Contains(s.Audiences, ""):
		return errors.New("empty audience")
	}
	return nil
}
