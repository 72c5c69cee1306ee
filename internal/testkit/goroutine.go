package testkit

import (
	"context"
	"net"
	"sync"
	"testing"
)

// Go runs run in a goroutine for the rest of the test, typically a server's
// Serve(ctx, lis) or a component's Run(ctx). The returned stop cancels run's
// context, waits for run to return and reports a non-nil error as a test
// error naming what. stop is registered with tb.Cleanup and may be called
// earlier (to stop the server mid-test); later calls do nothing.
//
// run's context is not tb.Context(): that is cancelled before cleanups run,
// which would stop the server before the test's other cleanups are done
// with it.
func Go(tb testing.TB, what string, run func(ctx context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("%s: %v", what, err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// Serve listens on a free port of 127.0.0.1, runs serve on that listener
// with Go (named what) and returns the listener's address.
func Serve(tb testing.TB, what string, serve func(context.Context, net.Listener) error) string {
	tb.Helper()
	lis := Listen(tb)
	Go(tb, what, func(ctx context.Context) error { return serve(ctx, lis) })
	return lis.Addr().String()
}
