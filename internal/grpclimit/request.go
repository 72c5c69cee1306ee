package grpclimit

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"
)

// errRequestTimeout ends a call whose first request message did not come
// within Config.RequestTimeout of its headers.
var errRequestTimeout = errors.New("grpclimit: no request message within the request timeout")

// requestTimerKey is the context key of a call's request timer, set by
// the tap handle and stopped by the interceptors once the request came.
type requestTimerKey struct{}

// startRequestTimer runs when a call's headers arrive, before anything
// reads its messages: the call's context is cancelled unless its first
// request message arrives within RequestTimeout. grpc-go reads a call's
// messages under this context, so a call that never sends one ends
// instead of holding its stream for the connection's whole age.
func (l *Limits) startRequestTimer(ctx context.Context, _ *tap.Info) (context.Context, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(l.cfg.RequestTimeout, func() { cancel(errRequestTimeout) })
	return context.WithValue(ctx, requestTimerKey{}, timer), nil
}

// stopRequestTimer stops the request timer of ctx, if it has one.
func stopRequestTimer(ctx context.Context) {
	if t, ok := ctx.Value(requestTimerKey{}).(*time.Timer); ok {
		t.Stop()
	}
}

// requestArrived stops a unary call's request timer: gRPC runs unary
// interceptors once the request message has been read.
func requestArrived(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	stopRequestTimer(ctx)
	return handler(ctx, req)
}

// firstRequestArrives stops a streaming call's request timer when its
// first message has been read, so that a long-lived stream (a bundle
// watch) is bounded only by the connection's age.
func firstRequestArrives(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &timedStream{ServerStream: ss})
}

// timedStream stops its call's request timer at the first RecvMsg that
// returns a message.
type timedStream struct {
	grpc.ServerStream
	received bool
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && !s.received {
		s.received = true
		stopRequestTimer(s.Context())
	}
	return err
}
