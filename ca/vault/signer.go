package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/vault/api"
)

// Signer is a crypto.Signer whose private key is a non-exportable Vault
// Transit key. It is safe for concurrent use. Close stops its token
// renewal.
type Signer struct {
	cfg     Config
	client  *api.Client
	auth    *authenticator
	pub     crypto.PublicKey
	version int // the Transit key version whose public key is pub

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
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
	cfg = cfg.withDefaults()
	client, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	s := &Signer{
		cfg:    cfg,
		client: client,
		auth:   newAuthenticator(cfg, client),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	// The sentinels name Vault ("vault is sealed: ..."): no prefix here.
	if err := s.auth.login(ctx); err != nil {
		return nil, s.classify(ctx, err)
	}
	if err := s.loadKey(ctx); err != nil {
		return nil, fmt.Errorf("transit key %s/%s: %w", cfg.Mount, cfg.KeyName, err)
	}
	go func() {
		defer close(s.done)
		s.auth.run(s.stop)
	}()
	return s, nil
}

// newClient builds a Vault client from cfg alone: the VAULT_* environment
// variables that api.NewClient would otherwise honour (token, namespace,
// TLS skip-verify) do not apply.
func newClient(cfg Config) (*api.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64 // Sign is called concurrently
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
	if cfg.CACertFile != "" {
		pemBytes, err := os.ReadFile(cfg.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("tls ca: no certificate in %s", cfg.CACertFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport.TLSClientConfig = tlsConfig
	client, err := api.NewClient(&api.Config{
		Address: cfg.Address,
		HttpClient: &http.Client{
			Transport: transport,
			// Vault redirects to the active node; the client follows
			// with the token itself (as api.DefaultConfig does).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		MaxRetries: cfg.MaxRetries,
		Timeout:    cfg.Timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	client.ClearToken()
	client.ClearNamespace()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	return client, nil
}

// Close stops renewing the token. It does not revoke it: the token lapses
// at its TTL. Close is idempotent; Sign must not be called after it.
func (s *Signer) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
	return nil
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

// call reads path (body nil) or writes body to it. When Vault rejects the
// token (403) it logs in again once and retries, so that an expired or
// revoked token costs one failed call. Errors are classified.
func (s *Signer) call(ctx context.Context, path string, body map[string]any) (*api.Secret, error) {
	do := func() (*api.Secret, error) {
		if body == nil {
			return s.client.Logical().ReadWithContext(ctx, path)
		}
		return s.client.Logical().WriteWithContext(ctx, path, body)
	}
	gen := s.auth.generation()
	secret, err := do()
	if statusOf(err) != http.StatusForbidden {
		if err != nil {
			return nil, s.classify(ctx, err)
		}
		return secret, nil
	}
	if lerr := s.auth.relogin(ctx, gen); lerr != nil {
		if errors.Is(lerr, errCannotRelogin) {
			return nil, s.classify(ctx, err)
		}
		return nil, fmt.Errorf("%w; login again: %w", s.classify(ctx, err), s.classify(ctx, lerr))
	}
	if secret, err = do(); err != nil {
		return nil, s.classify(ctx, err)
	}
	return secret, nil
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
