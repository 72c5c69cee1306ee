package adminapi

import (
	"context"
	"log/slog"

	"github.com/meshca/meshca/internal/grpcx"
)

// Mapper returns the status mapper of admin calls: one log line per failed
// call, "admin request failed", with the method, the actor and the full
// reason. unavailable says what callers read for a grpcx.ErrUnavailable
// error; nil means the store is named. Every admin server (root and
// issuer, reads and writes) maps through one of these, so that all its
// calls log alike.
func Mapper(log *slog.Logger, unavailable func(error) string) grpcx.Mapper {
	if unavailable == nil {
		unavailable = storeUnavailable
	}
	return grpcx.Mapper{
		Log: log, Event: "admin request failed", Unavailable: unavailable,
		Attrs: func(ctx context.Context) []any { return []any{"actor", Actor(ctx)} },
	}
}

func storeUnavailable(error) string { return "store temporarily unavailable; retry later" }

// Status maps an error from an admin call to a gRPC status through
// Mapper(log, nil): the caller's faults keep their text, which never holds
// secrets; store failures and our own are opaque to the caller.
func Status(ctx context.Context, log *slog.Logger, method string, err error) error {
	return Mapper(log, nil).Status(ctx, method, err)
}
