package grpcx_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/grpcx"
)

func TestMapperStatus(t *testing.T) {
	own := grpcx.Mark(errors.New("no active root"), grpcx.ErrUnavailable)
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		msg     string
		level   string
		noLeaks string // must not reach the caller
	}{
		{"auth is opaque", fmt.Errorf("%w: token expired", grpcx.ErrUnauthenticated), codes.Unauthenticated, "authentication failed", "WARN", "expired"},
		{"permission keeps text", fmt.Errorf("%w: cluster revoked", grpcx.ErrPermissionDenied), codes.PermissionDenied, "permission denied: cluster revoked", "WARN", ""},
		{"invalid argument keeps text", fmt.Errorf("%w: bad serial", grpcx.ErrInvalidArgument), codes.InvalidArgument, "invalid argument: bad serial", "INFO", ""},
		{"not found", fmt.Errorf("%w: cert 1", grpcx.ErrNotFound), codes.NotFound, "not found: cert 1", "INFO", ""},
		{"already exists", fmt.Errorf("%w: c", grpcx.ErrAlreadyExists), codes.AlreadyExists, "already exists: c", "INFO", ""},
		{"failed precondition", fmt.Errorf("%w: elsewhere", grpcx.ErrFailedPrecondition), codes.FailedPrecondition, "failed precondition: elsewhere", "INFO", ""},
		{"resource exhausted", fmt.Errorf("%w: 3 open", grpcx.ErrResourceExhausted), codes.ResourceExhausted, "too many streams; retry later", "DEBUG", "3 open"},
		{"unimplemented", fmt.Errorf("%w: no audit", grpcx.ErrUnimplemented), codes.Unimplemented, "unimplemented: no audit", "INFO", ""},
		{"cancelled", fmt.Errorf("store: %w", context.Canceled), codes.Canceled, "request cancelled", "INFO", "store"},
		{"deadline", fmt.Errorf("store: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "deadline exceeded", "WARN", "store"},
		{"unavailable is opaque", fmt.Errorf("%w: db down at 10.0.0.1", grpcx.ErrUnavailable), codes.Unavailable, "X unavailable", "ERROR", "10.0.0.1"},
		{"marked sentinel", own, codes.Unavailable, "X unavailable", "ERROR", "active"},
		{"ours is opaque", errors.New("nil map at 0x1"), codes.Internal, "internal error", "ERROR", "0x1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			m := grpcx.Mapper{
				Log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), Event: "call failed",
				Unavailable: func(error) string { return "X unavailable" },
				Attrs:       func(context.Context) []any { return []any{"actor", "uid:0"} },
			}
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 7}})
			st, _ := status.FromError(m.Status(ctx, "Revoke", tc.err))
			if st.Code() != tc.code || st.Message() != tc.msg {
				t.Errorf("status = %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if tc.noLeaks != "" && strings.Contains(st.Message(), tc.noLeaks) {
				t.Errorf("caller reads %q, which leaks %q", st.Message(), tc.noLeaks)
			}
			line := buf.String()
			for _, want := range []string{`"msg":"call failed"`, `"level":"` + tc.level + `"`, `"method":"Revoke"`,
				`"code":"` + tc.code.String() + `"`, `"actor":"uid:0"`, `"peer":"10.1.2.3:7"`, tc.err.Error()} {
				if !strings.Contains(line, want) {
					t.Errorf("log line %s lacks %s", line, want)
				}
			}
		})
	}
}

func TestMarkKeepsTextAndBothIdentities(t *testing.T) {
	base := errors.New("no active root")
	err := fmt.Errorf("sign: %w", grpcx.Mark(base, grpcx.ErrUnavailable))
	if err.Error() != "sign: no active root" {
		t.Errorf("text = %q", err)
	}
	if !errors.Is(err, base) || !errors.Is(err, grpcx.ErrUnavailable) {
		t.Errorf("errors.Is base %v, class %v; want both", errors.Is(err, base), errors.Is(err, grpcx.ErrUnavailable))
	}
}

func TestMapperDefaults(t *testing.T) {
	st, _ := status.FromError(grpcx.Mapper{Log: slog.New(slog.DiscardHandler)}.Status(context.Background(), "", grpcx.ErrUnavailable))
	if st.Code() != codes.Unavailable || st.Message() != "temporarily unavailable; retry later" {
		t.Errorf("status = %v %q", st.Code(), st.Message())
	}
}
