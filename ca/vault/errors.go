package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// Errors that name why a Vault call failed. They are wrapped together with
// the underlying error, so test them with errors.Is.
var (
	// ErrSealed means Vault answered but is sealed: an operator must
	// unseal it. Calls succeed again once it is unsealed.
	ErrSealed = errors.New("vault is sealed")
	// ErrUnreachable means Vault did not answer: connection refused or
	// reset, DNS or TLS failure, or no response within the timeout.
	ErrUnreachable = errors.New("vault is unreachable")
	// ErrPermissionDenied means Vault refused the token even after a fresh
	// login: the token, its policy or the auth role must be fixed.
	ErrPermissionDenied = errors.New("vault permission denied")
)

// healthProbeTimeout bounds the sys/health call that tells a sealed Vault
// from another 503.
const healthProbeTimeout = 2 * time.Second

// shortResponse renders an api.ResponseError, whose message spans several
// lines, as "HTTP 503: Vault is sealed".
func shortResponse(re *api.ResponseError) string {
	// Vault's messages may span lines ("1 error occurred:\n\t* ...").
	msg := strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " ")
	if msg == "" {
		msg = http.StatusText(re.StatusCode)
	}
	return fmt.Sprintf("HTTP %d: %s", re.StatusCode, msg)
}

// vaultError is a classified error: the sentinel naming the cause (if
// any), then the original error's message on one line.
type vaultError struct {
	cause error // ErrSealed, ErrUnreachable, ErrPermissionDenied or nil
	msg   string
	err   error
}

func (e *vaultError) Error() string {
	if e.cause == nil {
		return e.msg
	}
	return e.cause.Error() + ": " + e.msg
}

func (e *vaultError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.err}
	}
	return []error{e.cause, e.err}
}

// statusOf returns the HTTP status of a Vault response error, or 0.
func statusOf(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// classify wraps err from a Vault call with the sentinel that names its
// cause, probing sys/health to tell a sealed Vault from another 503. An
// error from a cancelled ctx is returned as is: the caller gave up, Vault
// did not fail.
func (s *Client) classify(ctx context.Context, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		e := &vaultError{msg: strings.Replace(err.Error(), re.Error(), shortResponse(re), 1), err: err}
		switch {
		case re.StatusCode == http.StatusForbidden:
			e.cause = ErrPermissionDenied
		case re.StatusCode == http.StatusServiceUnavailable && s.sealed():
			e.cause = ErrSealed
		}
		return e
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return err
	}
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		msg = fmt.Sprintf("no answer in time (timeout %v): %s", s.cfg.Timeout, msg)
	}
	return &vaultError{cause: ErrUnreachable, msg: msg, err: err}
}

// sealed reports whether sys/health says Vault is sealed.
func (s *Client) sealed() bool {
	ctx, cancel := context.WithTimeout(context.Background(), min(healthProbeTimeout, s.cfg.Timeout))
	defer cancel()
	h, err := s.client.Sys().HealthWithContext(ctx)
	return err == nil && h.Sealed
}
