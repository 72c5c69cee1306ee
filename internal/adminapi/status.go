package adminapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Error classes of admin calls. Service code wraps one of them (with %w)
// around the reason; Status is the only place they become gRPC codes. Any
// other error is ours: Internal, with the reason in the log only.
var (
	// ErrInvalidArgument: the request is malformed (a bad serial, SPIFFE ID
	// or limit).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: what the request names does not exist (a certificate, a
	// revocation in force).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the change is already in force (a revocation).
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the call belongs elsewhere (the root's admin
	// socket rather than an issuer's, or another cluster's issuer), or the
	// target's state does not allow it.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnimplemented: this server's store cannot answer the call.
	ErrUnimplemented = errors.New("unimplemented")
	// ErrUnavailable: the store failed; retrying later may succeed.
	ErrUnavailable = errors.New("unavailable")
	// ErrPermissionDenied: the caller may not make this call over this
	// transport (issuing an admin credential over mutual TLS).
	ErrPermissionDenied = errors.New("permission denied")
)

// Status maps an error from an admin call to a gRPC status and logs the
// full reason with the method and the actor. The caller's faults keep
// their text, which never holds secrets; store failures and our own are
// opaque to the caller.
func Status(ctx context.Context, log *slog.Logger, method string, err error) error {
	if log == nil {
		log = slog.Default()
	}
	code, msg, level := codes.Internal, "internal error", slog.LevelError
	switch {
	case errors.Is(err, ErrInvalidArgument):
		code, msg, level = codes.InvalidArgument, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrNotFound):
		code, msg, level = codes.NotFound, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrAlreadyExists):
		code, msg, level = codes.AlreadyExists, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrFailedPrecondition):
		code, msg, level = codes.FailedPrecondition, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrPermissionDenied):
		code, msg, level = codes.PermissionDenied, err.Error(), slog.LevelWarn
	case errors.Is(err, ErrUnimplemented):
		code, msg, level = codes.Unimplemented, err.Error(), slog.LevelInfo
	case errors.Is(err, context.Canceled):
		code, msg, level = codes.Canceled, "request cancelled", slog.LevelInfo
	case errors.Is(err, context.DeadlineExceeded):
		code, msg, level = codes.DeadlineExceeded, "deadline exceeded", slog.LevelWarn
	case errors.Is(err, ErrUnavailable):
		code, msg = codes.Unavailable, "store temporarily unavailable; retry later"
	}
	log.Log(ctx, level, "admin request failed", "method", method, "code", code.String(), "reason", err.Error(),
		"actor", Actor(ctx), "peer", peerAddr(ctx))
	return status.Error(code, msg)
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
