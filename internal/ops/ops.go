package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: nil while it holds, else an error
// saying what is wrong (it is shown on /readyz, so it must hold no secret).
type Check struct {
	// Name says what is checked, e.g. "store" or "intermediate".
	Name string
	// Ready reports the condition; it should return within the context's
	// deadline (a few seconds). Its error is shown on /readyz unless it
	// comes from Hide.
	Ready func(ctx context.Context) error
}

// Checks are a process's readiness conditions, all of which must hold.
type Checks []Check

// checkTimeout bounds one evaluation of all checks.
const checkTimeout = 5 * time.Second

// Ready runs the checks in order and returns the first failure, named, or
// nil when all hold. Public gives the part of a failure /readyz shows.
func (cs Checks) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	for _, c := range cs {
		if err := c.Ready(ctx); err != nil {
			return &checkError{name: c.Name, err: err}
		}
	}
	return nil
}

// Config configures the operations listener.
type Config struct {
	// Listen is the TCP address of the listener. Required.
	Listen string
	// ReusePort opens it with SO_REUSEPORT (ListenTCP). False: a port
	// already bound is an error.
	ReusePort bool
	// Gatherer provides /metrics; nil serves no metrics.
	Gatherer prometheus.Gatherer
	// Checks decide /readyz.
	Checks Checks
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("ops: listen address is required")
	}
	for _, ch := range c.Checks {
		if ch.Name == "" || ch.Ready == nil {
			return errors.New("ops: every readiness check needs a name and a function")
		}
	}
	return nil
}

// Handler returns the operations endpoints: GET /healthz, GET /readyz and,
// with a gatherer, GET /metrics. Bodies of the health endpoints are one
// line of text; /readyz answers 503 with the failing check when not ready.
func Handler(g prometheus.Gatherer, checks Checks) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := checks.Ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", Public(err))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if g != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	return mux
}

// listen opens c.Listen (":0" picks a port).
func (c Config) listen() (net.Listener, error) {
	lis, err := ListenTCP(c.Listen, c.ReusePort)
	if err != nil {
		return nil, fmt.Errorf("ops listener: %w", err)
	}
	return lis, nil
}

// Serve serves Handler on lis until ctx is done. It returns nil after ctx
// ends, else the server's error.
func Serve(ctx context.Context, lis net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("ops listener: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return nil
}

// Run opens c.Listen and serves the operations endpoints until ctx is
// done. serving, when not nil, is called with the bound address once the
// listener accepts connections.
func Run(ctx context.Context, c Config, serving func(addr string)) error {
	if err := c.Validate(); err != nil {
		return err
	}
	lis, err := c.listen()
	if err != nil {
		return err
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	log.InfoContext(ctx, "ops listener serving", "addr", lis.Addr().String())
	if serving != nil {
		serving(lis.Addr().String())
	}
	return Serve(ctx, lis, Handler(c.Gatherer, c.Checks))
}
