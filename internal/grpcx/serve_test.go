package grpcx_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshca/meshca/internal/grpcx"
)

func TestServeStopsOnCancelAfterBeforeStop(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ctx, cancel := context.WithCancel(context.Background())
	before := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- grpcx.Serve(ctx, srv, lis, time.Second, func() { close(before) }) }()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	select {
	case <-before:
	default:
		t.Fatal("beforeStop did not run")
	}
	_ = lis.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second)) // fail, not hang, if still open
	if _, err := lis.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Serve returned = %v, want net.ErrClosed", err)
	}
}

func TestServeReturnsServeError(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
	called := false
	err = grpcx.Serve(context.Background(), grpc.NewServer(), lis, time.Second, func() { called = true })
	if err == nil || called {
		t.Fatalf("Serve on a closed listener = %v (beforeStop called %v), want an error and no beforeStop", err, called)
	}
}

// TestStopCutsCallsWhenCtxIsDone holds a stream open (a health watch),
// which a graceful stop alone would wait for; Stop with a done ctx ends it.
func TestStopCutsCallsWhenCtxIsDone(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the stream is open on the server
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	grpcx.Stop(ctx, srv)
	if _, err := stream.Recv(); err == nil {
		t.Fatal("the watch survived Stop")
	}
}
