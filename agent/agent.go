package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/rotation"
)

// Config configures an Agent: where its identity comes from and where it is
// served. At least one of SDSSocket, WorkloadSocket and OutputDir must be
// set.
type Config struct {
	// IssuerAddress is the issuer's host:port (Istio CA API over TLS).
	// Required.
	IssuerAddress string
	// ServerName overrides the issuer's TLS server name; empty means the
	// host of IssuerAddress.
	ServerName string
	// CABundleFile holds the roots (PEM) that authenticate the issuer and
	// anchor the served trust bundle; re-read for every renewal. Required.
	// It is the bootstrap trust: the own roots of the bundle the issuer
	// publishes are added to it (see DisableBundleWatch).
	CABundleFile string
	// DisableBundleWatch turns off following the trust bundle the issuer
	// publishes (meshca.v1.BundleService/WatchBundle) and its federated
	// trust domains; trust then comes from CABundleFile only. The zero value
	// watches; an issuer without BundleService (a plain Istio CA) is
	// detected and needs no setting.
	DisableBundleWatch bool
	// TokenFile holds the bearer token (a projected service-account token);
	// re-read for every renewal. Required.
	TokenFile string
	// ClusterID is sent to the issuer as "clusterid"; empty means the
	// issuer's own cluster.
	ClusterID string
	// KeyType is KeyECP256 (the default when empty) or KeyRSA2048.
	KeyType string
	// TTL is the certificate lifetime requested; zero means the issuer's
	// default.
	TTL time.Duration
	// SDSSocket is the Unix socket path for Envoy SDS v3, created with mode
	// 0600; empty means no SDS.
	SDSSocket string
	// WorkloadSocket is the Unix socket path for the SPIFFE Workload API;
	// empty means none.
	WorkloadSocket string
	// WorkloadSocketMode is the Workload API socket's file mode; zero means
	// 0666 (any local user may fetch the agent's identity, as with SPIRE's
	// agent socket).
	WorkloadSocketMode os.FileMode
	// OutputDir, when set, receives cert.pem, key.pem (0600) and bundle.pem
	// after every renewal, written atomically; empty means no files.
	OutputDir string
	// HealthAddr is the TCP address of the /healthz and /readyz endpoints,
	// normally on loopback; empty means no health server.
	HealthAddr string
	// ShutdownTimeout bounds a graceful stop; zero means 5 s.
	ShutdownTimeout time.Duration
	// Registerer receives the agent's metrics (CRLRejectedMetricName); nil
	// means no metrics. When it is also a prometheus.Gatherer (such as a
	// *prometheus.Registry) and HealthAddr is set, the health server serves
	// it at /metrics.
	Registerer prometheus.Registerer
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Validate applies defaults and reports the first problem with c.
func (c *Config) Validate() error {
	if c.WorkloadSocketMode == 0 {
		c.WorkloadSocketMode = 0o666
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.IssuerAddress == "":
		return errors.New("agent: issuer address is required")
	case c.CABundleFile == "":
		return errors.New("agent: CA bundle file is required")
	case c.TokenFile == "":
		return errors.New("agent: token file is required")
	case c.TTL < 0:
		return fmt.Errorf("agent: ttl %v is negative", c.TTL)
	case c.SDSSocket == "" && c.WorkloadSocket == "" && c.OutputDir == "":
		return errors.New("agent: nothing to serve: set an SDS socket, a Workload API socket or an output directory")
	case c.SDSSocket != "" && filepath.Clean(c.SDSSocket) == filepath.Clean(c.WorkloadSocket):
		return errors.New("agent: the SDS and Workload API sockets must be different files")
	case c.WorkloadSocketMode&^os.ModePerm != 0:
		return fmt.Errorf("agent: workload socket mode %v is not a permission mode", c.WorkloadSocketMode)
	case c.ShutdownTimeout < 0:
		return errors.New("agent: shutdown timeout must not be negative")
	}
	if c.HealthAddr != "" {
		if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
			return fmt.Errorf("agent: health address: %w", err)
		}
	}
	if _, err := GenerateKeyFunc(c.KeyType); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

func (c *Config) managerConfig(f Fetcher, pub *Publisher) ManagerConfig {
	return ManagerConfig{
		Fetcher: f, Publisher: pub, TokenFile: c.TokenFile, CABundleFile: c.CABundleFile,
		KeyType: c.KeyType, TTL: c.TTL, OutputDir: c.OutputDir, Registerer: c.Registerer, Logger: c.Logger,
	}
}

// Agent renews its identity and serves it over SDS, the Workload API and
// files. Create it with New, then call Run exactly once.
type Agent struct {
	cfg        Config
	client     *Client
	pub        *Publisher
	manager    *Manager
	loop       *rotation.Loop
	watcher    *BundleWatcher // nil when disabled
	servers    []server
	healthAddr string
}

// New checks cfg, reads the CA bundle, prepares the issuer client and opens
// the sockets and the health listener, so clients may connect as soon as it
// returns; they are served once Run starts. It does not contact the issuer.
func New(cfg Config) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, pub: NewPublisher()}
	roots, err := readBundleFile(cfg.CABundleFile)
	if err != nil {
		return nil, err
	}
	a.client, err = NewClient(ClientConfig{
		Address: cfg.IssuerAddress, ServerName: cfg.ServerName, Roots: roots, ClusterID: cfg.ClusterID, TokenFile: cfg.TokenFile,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.manager, err = NewManager(cfg.managerConfig(a.client, a.pub)); err != nil {
		return nil, err
	}
	if a.loop, err = rotation.New(rotation.Config{Renewer: a.manager, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if !cfg.DisableBundleWatch {
		a.watcher, err = NewBundleWatcher(BundleWatcherConfig{Source: a.client, Updater: a.manager, Issuer: cfg.IssuerAddress, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
	}
	if a.servers, err = a.listen(); err != nil {
		return nil, err
	}
	return a, nil
}

// HealthAddr returns the address the health endpoints listen on ("" when
// disabled); useful when Config.HealthAddr asked for port 0.
func (a *Agent) HealthAddr() string { return a.healthAddr }

// Ready reports nil while the agent holds a valid certificate, else why not.
func (a *Agent) Ready() error { return a.manager.Ready() }

// Run renews, follows the issuer's trust bundle and serves until ctx is
// cancelled, then closes every stream
// cleanly, removes the sockets and returns nil. If a server fails, it shuts
// the others down the same way and returns that error.
func (a *Agent) Run(ctx context.Context) error {
	defer a.close()
	servers := a.servers
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range servers {
		g.Go(s.serve)
	}
	g.Go(func() error { return a.loop.Run(gctx) })
	if a.watcher != nil {
		g.Go(func() error { return a.watcher.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		a.shutdown(servers)
		return nil
	})
	a.cfg.Logger.Info("meshca agent running", "sds_socket", a.cfg.SDSSocket, "workload_socket", a.cfg.WorkloadSocket,
		"output_dir", a.cfg.OutputDir, "health_addr", a.healthAddr, "issuer", a.cfg.IssuerAddress, "bundle_watch", a.watcher != nil)
	return g.Wait()
}

func (a *Agent) close() {
	if a.manager != nil {
		a.manager.Stop()
	}
	if a.client != nil {
		_ = a.client.Close() // only a connection to drop
	}
}

// server is one listening endpoint of the agent.
type server struct {
	serve    func() error
	shutdown func(context.Context)
}

// listen opens every configured endpoint. On error, those already opened are
// closed.
func (a *Agent) listen() (_ []server, err error) {
	var servers []server
	defer func() {
		if err != nil {
			for _, s := range servers {
				s.shutdown(context.Background())
			}
		}
	}()
	if a.cfg.SDSSocket != "" {
		sds, err := NewSDSServer(SDSConfig{Source: a.pub, Logger: a.cfg.Logger})
		if err != nil {
			return nil, err
		}
		g := grpc.NewServer()
		sds.Register(g)
		s, err := grpcServer("sds", a.cfg.SDSSocket, 0o600, g, sds.Shutdown)
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
	}
	if a.cfg.WorkloadSocket != "" {
		wl, err := NewWorkloadServer(WorkloadConfig{Source: a.pub, Logger: a.cfg.Logger})
		if err != nil {
			return nil, err
		}
		g := grpc.NewServer(wl.ServerOptions()...)
		wl.Register(g)
		s, err := grpcServer("workload api", a.cfg.WorkloadSocket, a.cfg.WorkloadSocketMode, g, wl.Shutdown)
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
	}
	if a.cfg.HealthAddr != "" {
		gatherer, _ := a.cfg.Registerer.(prometheus.Gatherer)
		s, addr, err := httpServer(a.cfg.HealthAddr, healthAndMetrics(a.manager, gatherer))
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
		a.healthAddr = addr
	}
	return servers, nil
}

// shutdown stops every server, each within the shutdown timeout.
func (a *Agent) shutdown(servers []server) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	done := make(chan struct{}, len(servers))
	for _, s := range servers {
		go func() { s.shutdown(ctx); done <- struct{}{} }()
	}
	for range servers {
		<-done
	}
}

// grpcServer serves g on a Unix socket. Shutting down ends the service's
// streams (endStreams), then stops gracefully, or forcibly at the deadline.
func grpcServer(name, path string, perm os.FileMode, g *grpc.Server, endStreams func()) (server, error) {
	lis, err := listenUnix(path, perm)
	if err != nil {
		return server{}, fmt.Errorf("%s: %w", name, err)
	}
	return server{
		serve: func() error {
			if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		},
		shutdown: func(ctx context.Context) {
			endStreams()
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-ctx.Done():
				g.Stop()
			}
			_ = lis.Close() // removes the socket file; already closed by Stop is fine
		},
	}, nil
}

func httpServer(addr string, h http.Handler) (server, string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return server{}, "", fmt.Errorf("health: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	return server{
		serve: func() error {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("health: %w", err)
			}
			return nil
		},
		shutdown: func(ctx context.Context) {
			if srv.Shutdown(ctx) != nil {
				_ = srv.Close() // deadline passed: drop the remaining connections
			}
			_ = lis.Close() // Shutdown closed it unless Serve never ran
		},
	}, lis.Addr().String(), nil
}

func readBundleFile(path string) (*ca.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	b, err := ca.ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("CA bundle %s: %w", path, err)
	}
	return b, nil
}
