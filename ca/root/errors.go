package root

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/grpclimit"
)

// Error classes. Service code wraps one of them (with %w) around the
// reason; statusOf is the only place they become gRPC codes.
var (
	// errUnauthenticated: a bad, used or expired join token, or a missing
	// or unacceptable credential. Callers learn nothing more.
	errUnauthenticated = errors.New("unauthenticated")
	// errInvalidArgument: the caller's request is malformed.
	errInvalidArgument = errors.New("invalid argument")
	// errAlreadyExists: a cluster of that name exists with another trust
	// domain, or a cluster is already revoked.
	errAlreadyExists = errors.New("already exists")
	// errNotFound: an admin call names a cluster that is not registered.
	errNotFound = errors.New("not found")
	// errPermissionDenied: an authenticated issuer may not do this (its
	// cluster is revoked, or a CRL it publishes is not its own).
	errPermissionDenied = errors.New("permission denied")
	// errFailedPrecondition: the call belongs to an issuer's admin socket,
	// or the cluster's state does not allow it.
	errFailedPrecondition = errors.New("failed precondition")
	// errUnavailable: the store or a key (Vault) failed; retry later.
	errUnavailable = errors.New("unavailable")
	// errNoActiveRoot: no root may sign now (all expired, or the active
	// root's key cannot be loaded).
	errNoActiveRoot = errors.New("no active root")
	// errSelfCheck: a certificate the root just signed failed its own
	// verification; it is never returned (an internal error).
	errSelfCheck = errors.New("self-check of a certificate just signed failed")
)

// statusOf maps an error from a service method to a gRPC status and logs
// the full reason. Authentication failures and our own failures are opaque
// to the caller.
func statusOf(ctx context.Context, log *slog.Logger, method string, err error) error {
	code, msg, level := codes.Internal, "internal error", slog.LevelError
	switch {
	case errors.Is(err, errUnauthenticated):
		code, msg, level = codes.Unauthenticated, "authentication failed", slog.LevelWarn
	case errors.Is(err, errInvalidArgument):
		code, msg, level = codes.InvalidArgument, err.Error(), slog.LevelInfo
	case errors.Is(err, errAlreadyExists):
		code, msg, level = codes.AlreadyExists, err.Error(), slog.LevelInfo
	case errors.Is(err, errNotFound):
		code, msg, level = codes.NotFound, err.Error(), slog.LevelInfo
	case errors.Is(err, errPermissionDenied):
		code, msg, level = codes.PermissionDenied, err.Error(), slog.LevelWarn
	case errors.Is(err, grpclimit.ErrLimit):
		// grpclimit logs refusals, at most one line a second: a flood
		// of them must not flood the log.
		code, msg, level = codes.ResourceExhausted, "too many streams; retry later", slog.LevelDebug
	case errors.Is(err, errFailedPrecondition):
		code, msg, level = codes.FailedPrecondition, err.Error(), slog.LevelInfo
	case errors.Is(err, context.Canceled):
		code, msg, level = codes.Canceled, "request cancelled", slog.LevelInfo
	case errors.Is(err, context.DeadlineExceeded):
		code, msg, level = codes.DeadlineExceeded, "deadline exceeded", slog.LevelWarn
	case errors.Is(err, errUnavailable), errors.Is(err, errNoActiveRoot):
		code, msg = codes.Unavailable, "root CA temporarily unavailable; retry later"
		// Name a key store outage: the operator's fix is there.
		for _, cause := range []error{vault.ErrSealed, vault.ErrUnreachable, vault.ErrPermissionDenied} {
			if errors.Is(err, cause) {
				msg = "root CA temporarily unavailable (" + cause.Error() + "); retry later"
			}
		}
	}
	log.Log(ctx, level, "request failed", "method", method, "code", code.String(), "reason", err.Error(),
		"peer", peerAddr(ctx))
	return status.Error(code, msg)
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
