package grpcx

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// Serve serves srv on lis until ctx is done, then stops it: beforeStop,
// when not nil, runs first (to end long-lived streams, which a graceful
// stop would otherwise wait for), then in-flight calls get grace to finish
// before the rest are cut. It returns nil after a stop, and Serve's error
// (without calling beforeStop) when serving fails first.
func Serve(ctx context.Context, srv *grpc.Server, lis net.Listener, grace time.Duration, beforeStop func()) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	if beforeStop != nil {
		beforeStop()
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	Stop(stopCtx, srv)
	return nil
}

// Stop stops srv gracefully, letting in-flight calls finish, and cuts them
// when ctx is done first. It returns when srv has stopped.
func Stop(ctx context.Context, srv *grpc.Server) {
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		srv.Stop()
		<-stopped
	}
}

// PeerAddr returns the caller's network address, for logs; empty when ctx
// carries none.
func PeerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
