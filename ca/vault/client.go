package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"

	"github.com/hashicorp/vault/api"
)

// Client is a connection to Vault that has logged in and keeps its token
// alive (renewing it, logging in again when it cannot be renewed or is
// rejected). Signer is one per Transit key; other packages use it for
// other secrets engines (Read, Write). It is safe for concurrent use.
// Close stops its token renewal.
type Client struct {
	cfg    Config
	client *api.Client
	auth   *authenticator

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewClient logs in to the Vault cfg names. Of cfg only the connection
// and login settings apply (Address, Namespace, Auth, CACertFile,
// TLSServerName, Timeout, MaxRetries, Logger); Mount, KeyName and KeyType
// are ignored. ctx bounds NewClient only. The caller must Close it.
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.ValidateConnection(); err != nil {
		return nil, err
	}
	return dial(ctx, cfg)
}

// dial logs in with a validated cfg and starts the token's renewal.
func dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	client, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	c := &Client{
		cfg:    cfg,
		client: client,
		auth:   newAuthenticator(cfg, client),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	// The sentinels name Vault ("vault is sealed: ..."): no prefix here.
	if err := c.auth.login(ctx); err != nil {
		return nil, c.classify(ctx, err)
	}
	go func() {
		defer close(c.done)
		c.auth.run(c.stop)
	}()
	return c, nil
}

// Read reads path, within Config.Timeout. Errors wrap ErrSealed,
// ErrUnreachable or ErrPermissionDenied when one of them is the cause, and
// an *api.ResponseError when Vault answered with one.
func (c *Client) Read(ctx context.Context, path string) (*api.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return c.call(ctx, path, nil)
}

// Write writes body to path, within Config.Timeout; errors as Read's.
func (c *Client) Write(ctx context.Context, path string, body map[string]any) (*api.Secret, error) {
	if body == nil {
		body = map[string]any{}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return c.call(ctx, path, body)
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
func (s *Client) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

// call reads path (body nil) or writes body to it. When Vault rejects the
// token (403) it logs in again once and retries, so that an expired or
// revoked token costs one failed call. Errors are classified.
func (s *Client) call(ctx context.Context, path string, body map[string]any) (*api.Secret, error) {
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
