package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// Signer is a crypto.Signer whose private key is a non-exportable Vault
// Transit key. It is safe for concurrent use. Close stops its token
// renewal.
type Signer struct {
	*Client
	pub     crypto.PublicKey
	version int // the Transit key version whose public key is pub
}

var _ crypto.Signer = (*Signer)(nil)

// New logs in to Vault, creates the Transit key when it does not exist
// (non-exportable, without plaintext backup), refuses an existing key that
// is exportable or of another type, and fetches the public key of its
// latest version. Signatures are always made with that version, so a key
// rotated in Vault later does not change this Signer's public key.
//
// ctx bounds New only. The caller must Close the Signer.
func New(ctx context.Context, cfg Config) (*Signer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Signer{Client: c}
	if err := s.loadKey(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("transit key %s/%s: %w", c.cfg.Mount, c.cfg.KeyName, err)
	}
	return s, nil
}

// Public returns the public key of the Transit key version this Signer
// signs with: *ecdsa.PublicKey or *rsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// keyVersion returns the Transit key version this Signer signs with.
func (s *Signer) keyVersion() int { return s.version }

// Sign signs digest, which must be the output of opts.HashFunc(), in Vault.
// For an RSA key, *rsa.PSSOptions selects PSS and any other opts PKCS #1
// v1.5. rand is ignored: Vault supplies the randomness. Each call is
// bounded by Config.Timeout; use SignContext to bound it otherwise.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign bounded by ctx as well as by Config.Timeout. Errors
// wrap ErrSealed, ErrUnreachable or ErrPermissionDenied when one of them is
// the cause.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	body, err := signRequest(s.pub, s.version, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("transit sign: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	secret, err := s.call(ctx, s.cfg.Mount+"/sign/"+url.PathEscape(s.cfg.KeyName), body)
	if err != nil {
		return nil, fmt.Errorf("transit sign: %w", err)
	}
	if secret == nil {
		return nil, errors.New("transit sign: empty response")
	}
	text, _ := secret.Data["signature"].(string)
	sig, err := parseSignature(text, s.version)
	if err != nil {
		return nil, fmt.Errorf("transit sign: %w", err)
	}
	if err := verify(s.pub, digest, sig, opts); err != nil {
		return nil, fmt.Errorf("transit sign: key version %d: %w", s.version, err)
	}
	return sig, nil
}

// hashNames maps the hashes Transit accepts for prehashed input.
var hashNames = map[crypto.Hash]string{
	crypto.SHA224:   "sha2-224",
	crypto.SHA256:   "sha2-256",
	crypto.SHA384:   "sha2-384",
	crypto.SHA512:   "sha2-512",
	crypto.SHA3_224: "sha3-224",
	crypto.SHA3_256: "sha3-256",
	crypto.SHA3_384: "sha3-384",
	crypto.SHA3_512: "sha3-512",
}

// signRequest builds the body of a transit/sign call for a prehashed
// digest, signed with key version version of a key whose public key is pub.
func signRequest(pub crypto.PublicKey, version int, digest []byte, opts crypto.SignerOpts) (map[string]any, error) {
	if opts == nil {
		return nil, errors.New("signer options are required")
	}
	h := opts.HashFunc()
	name, ok := hashNames[h]
	if !ok {
		return nil, fmt.Errorf("unsupported hash %v", h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("digest is %d bytes, %v needs %d", len(digest), h, h.Size())
	}
	body := map[string]any{
		"input":          base64.StdEncoding.EncodeToString(digest),
		"prehashed":      true,
		"hash_algorithm": name,
		"key_version":    version,
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	switch pub.(type) {
	case *ecdsa.PublicKey:
		if isPSS {
			return nil, errors.New("PSS options given for an ECDSA key")
		}
		body["marshaling_algorithm"] = "asn1"
	case *rsa.PublicKey:
		body["signature_algorithm"] = "pkcs1v15"
		if isPSS {
			body["signature_algorithm"] = "pss"
			body["salt_length"] = saltLength(pss.SaltLength)
		}
	default:
		return nil, fmt.Errorf("unsupported public key %T", pub)
	}
	return body, nil
}

// saltLength renders a PSS salt length the way Transit takes it.
func saltLength(n int) string {
	switch n {
	case rsa.PSSSaltLengthAuto:
		return "auto"
	case rsa.PSSSaltLengthEqualsHash:
		return "hash"
	}
	return strconv.Itoa(n)
}

// parseSignature decodes "vault:vN:<base64>" and checks that N is want.
func parseSignature(text string, want int) ([]byte, error) {
	parts := strings.Split(text, ":")
	if len(parts) != 3 || parts[0] != "vault" || !strings.HasPrefix(parts[1], "v") {
		return nil, fmt.Errorf("malformed signature %q", truncate(text))
	}
	v, err := strconv.Atoi(parts[1][1:])
	if err != nil {
		return nil, fmt.Errorf("malformed signature version %q", parts[1])
	}
	if v != want {
		return nil, fmt.Errorf("signature made with key version %d, want %d", v, want)
	}
	sig, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("malformed signature encoding: %w", err)
	}
	if len(sig) == 0 {
		return nil, errors.New("empty signature")
	}
	return sig, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// verify checks a signature from Vault before it is handed out, so that a
// misbehaving Vault can never make the CA emit a bad certificate or CRL.
func verify(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	var ok bool
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		if pss, isPSS := opts.(*rsa.PSSOptions); isPSS {
			ok = rsa.VerifyPSS(k, opts.HashFunc(), digest, sig, pss) == nil
		} else {
			ok = rsa.VerifyPKCS1v15(k, opts.HashFunc(), digest, sig) == nil
		}
	}
	if !ok {
		return errors.New("vault returned a signature that does not verify")
	}
	return nil
}
