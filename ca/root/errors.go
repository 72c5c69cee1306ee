package root

import (
	"context"
	"errors"
	"log/slog"

	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/grpcx"
)

// Service code wraps a grpcx error class (with %w) around the reason;
// statusOf and adminService.status are the only places they become gRPC
// codes. The root's own sentinels:
var (
	// errNoActiveRoot: no root may sign now (all expired, or the active
	// root's key cannot be loaded). Callers retry later.
	errNoActiveRoot = grpcx.Mark(errors.New("no active root"), grpcx.ErrUnavailable)
	// errSelfCheck: a certificate the root just signed failed its own
	// verification; it is never returned (an internal error).
	errSelfCheck = errors.New("self-check of a certificate just signed failed")
)

// statusOf maps an error from a RootService or BundleService call to a
// gRPC status and logs the full reason. Authentication failures and our
// own failures are opaque to the caller.
func statusOf(ctx context.Context, log *slog.Logger, method string, err error) error {
	return grpcx.Mapper{Log: log, Unavailable: rootUnavailable}.Status(ctx, method, err)
}

// status maps an error from an AdminService call, written here or read
// through adminapi.Reads, the way every admin server does.
func (s *adminService) status(ctx context.Context, method string, err error) error {
	return adminapi.Mapper(s.r.log, rootUnavailable).Status(ctx, method, err)
}

// rootUnavailable is what callers read when the root cannot serve now. It
// names a key store outage: the operator's fix is there.
func rootUnavailable(err error) string {
	msg := "root CA temporarily unavailable; retry later"
	for _, cause := range []error{vault.ErrSealed, vault.ErrUnreachable, vault.ErrPermissionDenied} {
		if errors.Is(err, cause) {
			msg = "root CA temporarily unavailable (" + cause.Error() + "); retry later"
		}
	}
	return msg
}
