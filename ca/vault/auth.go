package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// errCannotRelogin means the configured method has nothing new to log in
// with: a token given inline cannot be replaced.
var errCannotRelogin = errors.New("a token given inline cannot be renewed past its max TTL or replaced; use a token file, approle or kubernetes")

// Bounds of the back-off between failed logins in the background loop.
const (
	minRelogin = 1 * time.Second
	maxRelogin = 30 * time.Second
)

// authenticator owns the client's token: it logs in, keeps the token alive
// with a LifetimeWatcher, and logs in again when the token can no longer be
// renewed, when it expires, or when Vault rejects it.
type authenticator struct {
	cfg    Config
	client *api.Client

	mu     sync.Mutex  // serializes logins; guards gen and secret
	gen    uint64      // incremented by every successful login
	secret *api.Secret // the last login; its Auth drives the watcher
	// changed is signalled (without blocking) after each login so that
	// the background loop watches the new token.
	changed chan struct{}
}

func newAuthenticator(cfg Config, client *api.Client) *authenticator {
	return &authenticator{cfg: cfg, client: client, changed: make(chan struct{}, 1)}
}

// generation returns the current login generation; pass it to relogin.
func (a *authenticator) generation() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen
}

// relogin logs in again unless another caller already did since generation
// gen was observed, so that many calls failing together log in once.
func (a *authenticator) relogin(ctx context.Context, gen uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gen != gen {
		return nil
	}
	return a.loginLocked(ctx)
}

// login logs in unconditionally (at start-up).
func (a *authenticator) login(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.loginLocked(ctx)
}

func (a *authenticator) loginLocked(ctx context.Context) error {
	secret, err := a.obtain(ctx)
	if err != nil {
		return err
	}
	a.client.SetToken(secret.Auth.ClientToken)
	a.secret = secret
	a.gen++
	select {
	case a.changed <- struct{}{}:
	default:
	}
	return nil
}

// obtain returns a login secret whose Auth carries the token, its TTL and
// whether it is renewable.
func (a *authenticator) obtain(ctx context.Context) (*api.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	if a.cfg.Auth.Method == AuthToken {
		return a.tokenSecret(ctx)
	}
	method, err := a.method()
	if err != nil {
		return nil, err
	}
	// Log in on a token-less clone: the shared client may still carry the
	// expired token, and a login needs none.
	c, err := a.clone("")
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	secret, err := method.Login(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("login (%s): %w", a.cfg.Auth.Method, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, fmt.Errorf("login (%s): vault returned no token", a.cfg.Auth.Method)
	}
	return secret, nil
}

// clone returns a client like the shared one with the given token (none if
// empty) and the configured namespace, whatever VAULT_* variables say.
func (a *authenticator) clone(token string) (*api.Client, error) {
	c, err := a.client.Clone()
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	if token != "" {
		c.SetToken(token)
	}
	c.ClearNamespace()
	if a.cfg.Namespace != "" {
		c.SetNamespace(a.cfg.Namespace)
	}
	return c, nil
}

// method builds the auth method afresh for every login, so that the
// Kubernetes token and the AppRole secret ID are re-read from their files.
func (a *authenticator) method() (api.AuthMethod, error) {
	switch a.cfg.Auth.Method {
	case AuthAppRole:
		ar := a.cfg.Auth.AppRole
		m, err := approle.NewAppRoleAuth(ar.RoleID, &approle.SecretID{FromFile: ar.SecretIDFile},
			approle.WithMountPath(ar.Mount))
		if err != nil {
			return nil, fmt.Errorf("login (approle): %w", err)
		}
		return m, nil
	case AuthKubernetes:
		k := a.cfg.Auth.Kubernetes
		m, err := kubernetes.NewKubernetesAuth(k.Role, kubernetes.WithServiceAccountTokenPath(k.JWTFile),
			kubernetes.WithMountPath(k.Mount))
		if err != nil {
			return nil, fmt.Errorf("login (kubernetes): %w", err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("unknown auth method %q", a.cfg.Auth.Method)
}

// tokenSecret reads the configured token and asks Vault for its TTL.
func (a *authenticator) tokenSecret(ctx context.Context) (*api.Secret, error) {
	token := a.cfg.Auth.Token
	if a.cfg.Auth.TokenFile != "" {
		b, err := os.ReadFile(a.cfg.Auth.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("token file %s is empty", a.cfg.Auth.TokenFile)
		}
	} else if a.gen > 0 {
		return nil, errCannotRelogin
	}
	secret := &api.Secret{Auth: &api.SecretAuth{ClientToken: token}}
	c, err := a.clone(token)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	switch {
	case statusOf(err) == http.StatusForbidden:
		// A token without the default policy cannot look itself up; it is
		// used anyway, neither renewed nor watched. An invalid token fails
		// on first use.
		return secret, nil
	case err != nil:
		return nil, fmt.Errorf("token lookup: %w", err)
	case self == nil:
		return secret, nil
	}
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	secret.Auth.LeaseDuration = int(ttl / time.Second)
	secret.Auth.Renewable = renewable
	return secret, nil
}

// run keeps the token alive until stop is closed: it watches the current
// login's lifetime (renewing it when renewable) and logs in again when the
// watcher gives up, backing off while logins fail.
func (a *authenticator) run(stop <-chan struct{}) {
	var backoff time.Duration
	retry := false // the last login failed: log in again without watching
	for {
		a.mu.Lock()
		secret, gen := a.secret, a.gen
		a.mu.Unlock()
		if !retry {
			started := time.Now()
			if !a.watch(secret, gen, stop) {
				if isClosed(stop) {
					return
				}
				continue // a new login replaced the token: watch that one
			}
			if time.Since(started) < minRelogin {
				backoff = max(backoff, minRelogin) // do not spin on a token born nearly expired
			}
		}
		if !sleep(stop, backoff) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
		err := a.relogin(ctx, gen)
		cancel()
		switch {
		case err == nil:
			backoff, retry = 0, false
			a.cfg.Logger.Info("vault: logged in again before the token expired", "method", a.cfg.Auth.Method)
		case errors.Is(err, errCannotRelogin):
			a.cfg.Logger.Warn("vault: token is about to expire and cannot be replaced", "error", err)
			if !a.waitNewLogin(gen, stop) {
				return
			}
			backoff, retry = 0, false
		default:
			backoff = min(max(2*backoff, minRelogin), maxRelogin)
			retry = true
			a.cfg.Logger.Warn("vault: login failed; retrying", "method", a.cfg.Auth.Method,
				"retry_in", backoff.String(), "error", err)
		}
	}
}

// watch blocks while the token of secret (login generation gen) is alive.
// It returns true when the token is about to expire or can no longer be
// renewed, false when a newer login replaced it or stop was closed.
func (a *authenticator) watch(secret *api.Secret, gen uint64, stop <-chan struct{}) bool {
	if secret == nil || secret.Auth == nil || secret.Auth.LeaseDuration <= 0 {
		// A token without a TTL (e.g. root), or whose TTL is unknown:
		// nothing to renew, nothing to expire.
		a.waitNewLogin(gen, stop)
		return false
	}
	w, err := a.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
		Secret:        secret,
		RenewBehavior: api.RenewBehaviorIgnoreErrors,
	})
	if err != nil {
		a.cfg.Logger.Warn("vault: cannot watch the token", "error", err)
		a.waitNewLogin(gen, stop)
		return false
	}
	go w.Start()
	defer w.Stop() // Start then returns; DoneCh is buffered
	for {
		select {
		case err := <-w.DoneCh():
			if err != nil {
				a.cfg.Logger.Warn("vault: token renewal failed", "error", err)
			}
			return true
		case <-w.RenewCh():
		case <-a.changed:
			if a.generation() != gen {
				return false
			}
		case <-stop:
			return false
		}
	}
}

// waitNewLogin blocks until a login newer than generation gen, or stop; it
// returns false on stop.
func (a *authenticator) waitNewLogin(gen uint64, stop <-chan struct{}) bool {
	for {
		select {
		case <-a.changed:
			if a.generation() != gen {
				return true
			}
		case <-stop:
			return false
		}
	}
}

func sleep(stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return !isClosed(stop)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
