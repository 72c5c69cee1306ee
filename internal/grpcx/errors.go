package grpcx

import (
	"cmp"
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error classes. Service code wraps one of them (with %w) around the
// reason; Mapper.Status is the only place they become gRPC codes. An error
// of none of them is ours: Internal, with the reason in the log only.
var (
	// ErrUnauthenticated: a credential (token, certificate) proves nothing.
	// Callers learn nothing more than that.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the caller is authenticated but may not do this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrInvalidArgument: the request is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: what the request names does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: what the request would create exists, or the change
	// is already in force.
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the call belongs to another server, or the
	// target's state does not allow it.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrResourceExhausted: a server cap (open streams) refused the call;
	// the cap logs its refusals itself, rate-limited.
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnimplemented: this server cannot answer the call.
	ErrUnimplemented = errors.New("unimplemented")
	// ErrUnavailable: a dependency (the store, a key, attestation) failed;
	// retrying later may succeed.
	ErrUnavailable = errors.New("unavailable")
)

// Mark returns an error with err's text that matches both err and class
// under errors.Is: a package's own sentinel ("no active root") or an error
// of another vocabulary (attest's) joins a class without a second prefix.
func Mark(err, class error) error { return marked{err, class} }

type marked struct{ err, class error }

func (m marked) Error() string   { return m.err.Error() }
func (m marked) Unwrap() []error { return []error{m.err, m.class} }

// Mapper maps the errors of one server's calls to gRPC statuses and logs
// each with its full reason. The zero value logs to slog.Default.
type Mapper struct {
	// Log receives one line per failed call; nil means slog.Default().
	Log *slog.Logger
	// Event is the message of that line; empty means "request failed".
	Event string
	// Unavailable returns what callers read for an ErrUnavailable error;
	// nil means "temporarily unavailable; retry later".
	Unavailable func(err error) string
	// Attrs returns extra attributes of the line (the admin actor); nil
	// means none. The caller's address is always logged as "peer".
	Attrs func(ctx context.Context) []any
}

// Status maps err, returned by the call method, to a gRPC status and logs
// the full reason. The caller's faults keep their text, which never holds
// secrets; authentication failures and our own are opaque to the caller.
func (m Mapper) Status(ctx context.Context, method string, err error) error {
	code, msg, level := codes.Internal, "internal error", slog.LevelError
	switch {
	case errors.Is(err, ErrUnauthenticated):
		code, msg, level = codes.Unauthenticated, "authentication failed", slog.LevelWarn
	case errors.Is(err, ErrPermissionDenied):
		code, msg, level = codes.PermissionDenied, err.Error(), slog.LevelWarn
	case errors.Is(err, ErrInvalidArgument):
		code, msg, level = codes.InvalidArgument, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrNotFound):
		code, msg, level = codes.NotFound, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrAlreadyExists):
		code, msg, level = codes.AlreadyExists, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrFailedPrecondition):
		code, msg, level = codes.FailedPrecondition, err.Error(), slog.LevelInfo
	case errors.Is(err, ErrResourceExhausted):
		// The cap logs refusals, at most one line a second: a flood of
		// them must not flood the log.
		code, msg, level = codes.ResourceExhausted, "too many streams; retry later", slog.LevelDebug
	case errors.Is(err, ErrUnimplemented):
		code, msg, level = codes.Unimplemented, err.Error(), slog.LevelInfo
	case errors.Is(err, context.Canceled):
		code, msg, level = codes.Canceled, "request cancelled", slog.LevelInfo
	case errors.Is(err, context.DeadlineExceeded):
		code, msg, level = codes.DeadlineExceeded, "deadline exceeded", slog.LevelWarn
	case errors.Is(err, ErrUnavailable):
		code, msg = codes.Unavailable, "temporarily unavailable; retry later"
		if m.Unavailable != nil {
			msg = m.Unavailable(err)
		}
	}
	attrs := make([]any, 0, 10)
	if method != "" {
		attrs = append(attrs, "method", method)
	}
	attrs = append(attrs, "code", code.String(), "reason", err.Error())
	if m.Attrs != nil {
		attrs = append(attrs, m.Attrs(ctx)...)
	}
	attrs = append(attrs, "peer", PeerAddr(ctx))
	log := m.Log
	if log == nil {
		log = slog.Default()
	}
	log.Log(ctx, level, cmp.Or(m.Event, "request failed"), attrs...)
	return status.Error(code, msg)
}
