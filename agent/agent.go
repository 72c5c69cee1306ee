package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/unixsock"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
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
	// It is the bootstrap trust: the own authorities of the bundle the
	// issuer publishes are added to it (see DisableBundleWatch). Under an
	// upstream PKI workloads are served the bundle's own roots (the
	// upstream's root) in place of meshca's CAs.
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
	// IssuerCluster is the cluster whose issuer the agent requires (see
	// ClientConfig.IssuerCluster): set it when ClusterID is an alias or a
	// remote cluster that another cluster's issuer attests. Empty means
	// ClusterID; when both are empty any cluster's issuer is accepted, and
	// New logs a warning.
	IssuerCluster string
	// DNSNames are asked for in every CSR, for a workload that serves
	// under DNS names (istiod: istiod.istio-system.svc); the issuer grants
	// them only to identities its configuration names (dnsGrants) and
	// refuses the request otherwise. Lower-case DNS names, no wildcards,
	// no repeats. Nil asks for none: a SPIFFE-ID-only certificate.
	DNSNames []string
	// KeyType is KeyECP256 (the default when empty) or KeyRSA2048.
	KeyType string
	// TTL is the certificate lifetime requested; zero means the issuer's
	// default.
	TTL time.Duration
	// SPIFFEID is the identity the agent's certificates must carry; a
	// certificate with another is refused (the agent keeps the one it has
	// and retries). The zero value means the identity of the first
	// certificate obtained.
	SPIFFEID spiffeid.ID
	// SDSSocket is the Unix socket path for Envoy SDS v3, created with mode
	// 0600 (only the agent's user, and root, may connect); empty means no
	// SDS.
	SDSSocket string
	// SDSPeers further restricts the SDS socket to processes of given uids
	// or gids; the zero value checks nothing beyond the file mode.
	SDSPeers PeerPolicy
	// WorkloadSocket is the Unix socket path for the SPIFFE Workload API;
	// empty means none. Whoever may connect gets the agent's certificate
	// and private key.
	WorkloadSocket string
	// WorkloadSocketMode is the Workload API socket's file mode; zero means
	// 0600 (only the agent's user), or 0660 when WorkloadSocketGroup is set
	// (that group too). 0666 lets every local user fetch the agent's
	// identity.
	WorkloadSocketMode os.FileMode
	// WorkloadSocketGroup is the numeric gid the Workload API socket is
	// given, so that applications running as other users in that group (a
	// pod's fsGroup, say) may connect; empty means the agent's own group.
	WorkloadSocketGroup string
	// WorkloadPeers further restricts the Workload API socket to processes
	// of given uids or gids; the zero value checks nothing beyond the file
	// mode.
	WorkloadPeers PeerPolicy
	// Limits bound the connections and streams of each socket (SDS and
	// Workload API separately); the zero value means StreamLimits'
	// defaults.
	Limits StreamLimits
	// OutputDir, when set, receives cert.pem, key.pem (0600) and bundle.pem
	// after every renewal, written atomically; empty means no files.
	OutputDir string
	// HealthAddr is the TCP address of the /healthz, /readyz and /metrics
	// endpoints (internal/ops.Handler), normally on loopback; empty means
	// no health server.
	HealthAddr string
	// ShutdownTimeout bounds a graceful stop; zero means 5 s.
	ShutdownTimeout time.Duration
	// Registerer receives the agent's metrics (meshca_agent_*, and
	// meshca_ready{component="agent"}); nil means no metrics. When it is also a prometheus.Gatherer (such as a
	// *prometheus.Registry) and HealthAddr is set, the health server serves
	// it at /metrics.
	Registerer prometheus.Registerer
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c, as New would apply it. It
// does not modify c.
func (c Config) Validate() error {
	d := c.withDefaults()
	return d.validate()
}

// withDefaults returns c with the defaults of its zero fields applied.
func (c Config) withDefaults() Config {
	if c.WorkloadSocketMode == 0 {
		c.WorkloadSocketMode = 0o600
		if c.WorkloadSocketGroup != "" {
			c.WorkloadSocketMode = 0o660
		}
	}
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 5*time.Second)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	c.Limits = c.Limits.withDefaults()
	return c
}

func (c *Config) validate() error {
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
	if _, err := c.workloadSocketGID(); err != nil {
		return err
	}
	if err := c.SDSPeers.validate(); err != nil {
		return fmt.Errorf("agent: sds peers: %w", err)
	}
	if err := c.WorkloadPeers.validate(); err != nil {
		return fmt.Errorf("agent: workload api peers: %w", err)
	}
	if err := c.Limits.validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.HealthAddr != "" {
		if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
			return fmt.Errorf("agent: health address: %w", err)
		}
	}
	if _, err := generateKeyFunc(c.KeyType); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	for i, n := range c.DNSNames {
		if !trust.ValidDNSName(n) || net.ParseIP(n) != nil {
			return fmt.Errorf("agent: DNS name %q: want a lower-case DNS name without wildcards", n)
		}
		if slices.Contains(c.DNSNames[:i], n) {
			return fmt.Errorf("agent: DNS name %q is given twice", n)
		}
	}
	return nil
}

// workloadSocketGID returns the gid of WorkloadSocketGroup; -1 when empty.
func (c *Config) workloadSocketGID() (int, error) {
	if c.WorkloadSocketGroup == "" {
		return -1, nil
	}
	gid, err := strconv.ParseUint(c.WorkloadSocketGroup, 10, 31)
	if err != nil {
		return 0, fmt.Errorf("agent: workload socket group %q: want a numeric gid", c.WorkloadSocketGroup)
	}
	return int(gid), nil
}

func (c *Config) managerConfig(f fetcher, pub *publisher) managerConfig {
	return managerConfig{
		Fetcher: f, Publisher: pub, TokenFile: c.TokenFile, CABundleFile: c.CABundleFile,
		KeyType: c.KeyType, TTL: c.TTL, SPIFFEID: c.SPIFFEID, OutputDir: c.OutputDir, Registerer: c.Registerer, Logger: c.Logger,
	}
}

// Agent renews its identity and serves it over SDS, the Workload API and
// files. Create it with New, then call Run exactly once.
type Agent struct {
	cfg        Config
	client     *Client
	pub        *publisher
	manager    *manager
	loop       *rotation.Loop
	watcher    *bundleWatcher // nil when disabled
	servers    []server
	healthAddr string
}

// New checks cfg, reads the CA bundle, prepares the issuer client and opens
// the sockets and the health listener, so clients may connect as soon as it
// returns; they are served once Run starts. It does not contact the issuer.
func New(cfg Config) (_ *Agent, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, pub: newPublisher()}
	roots, err := readBundleFile(cfg.CABundleFile)
	if err != nil {
		return nil, err
	}
	a.client, err = NewClient(ClientConfig{Address: cfg.IssuerAddress, ServerName: cfg.ServerName, Roots: roots,
		ClusterID: cfg.ClusterID, IssuerCluster: cfg.IssuerCluster, TokenFile: cfg.TokenFile, DNSNames: cfg.DNSNames})
	if err != nil {
		return nil, err
	}
	if cfg.IssuerCluster == "" && cfg.ClusterID == "" {
		cfg.Logger.Warn("no cluster id or issuer cluster configured: the issuer of any cluster under the CA bundle is accepted",
			"issuer", cfg.IssuerAddress)
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.manager, err = newManager(cfg.managerConfig(a.client, a.pub)); err != nil {
		return nil, err
	}
	if _, err = ops.Register(cfg.Registerer, ops.ReadyGauge("agent", a.manager.checks())); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if a.loop, err = rotation.New(rotation.Config{Renewer: a.manager, RenewNow: a.manager.RenewNow(), Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if !cfg.DisableBundleWatch {
		a.watcher, err = newBundleWatcher(bundleWatcherConfig{Source: a.client, Updater: a.manager, Issuer: cfg.IssuerAddress,
			Registerer: cfg.Registerer, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
	}
	if a.servers, err = a.listen(); err != nil {
		return nil, err
	}
	return a, nil
}

// SetTokenFile makes the agent read its token from path from now on, for
// renewals and bundle watches. A path without a readable, non-empty token
// is refused and changes nothing.
func (a *Agent) SetTokenFile(path string) error {
	if _, err := ReadToken(path); err != nil {
		return err
	}
	a.manager.SetTokenFile(path)
	a.client.setTokenFile(path)
	a.cfg.Logger.Info("token file replaced", "token_file", path)
	return nil
}

// boundHealthAddr returns the address the health endpoints listen on ("" when
// disabled); useful when Config.HealthAddr asked for port 0.
func (a *Agent) boundHealthAddr() string { return a.healthAddr }

// ready reports nil while the agent holds a valid certificate, else why not.
func (a *Agent) ready() error { return a.manager.Ready() }

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
		sds, err := newSDSServer(sdsConfig{Source: a.pub, Registerer: a.cfg.Registerer, Logger: a.cfg.Logger})
		if err != nil {
			return nil, err
		}
		g := grpc.NewServer(a.cfg.Limits.serverOptions("sds", a.cfg.Logger)...)
		sds.Register(g)
		s, err := a.grpcServer(unixSocket{name: "sds", path: a.cfg.SDSSocket, perm: 0o600, gid: -1, peers: a.cfg.SDSPeers}, g, sds.Shutdown)
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
	}
	if a.cfg.WorkloadSocket != "" {
		wl, err := newWorkloadServer(workloadConfig{Source: a.pub, Minter: a.client, Logger: a.cfg.Logger})
		if err != nil {
			return nil, err
		}
		g := grpc.NewServer(append(wl.ServerOptions(), a.cfg.Limits.serverOptions("workload api", a.cfg.Logger)...)...)
		wl.Register(g)
		gid, _ := a.cfg.workloadSocketGID() // checked by validate
		sock := unixSocket{name: "workload api", path: a.cfg.WorkloadSocket, perm: a.cfg.WorkloadSocketMode, gid: gid, peers: a.cfg.WorkloadPeers}
		s, err := a.grpcServer(sock, g, wl.Shutdown)
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
	}
	if a.cfg.HealthAddr != "" {
		gatherer, _ := a.cfg.Registerer.(prometheus.Gatherer)
		s, addr, err := httpServer(a.cfg.HealthAddr, ops.Handler(gatherer, a.manager.checks()))
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

// unixSocket is one of the agent's Unix sockets: its name in logs, path,
// file mode, group (-1: the agent's) and the processes it serves.
type unixSocket struct {
	name, path string
	perm       os.FileMode
	gid        int
	peers      PeerPolicy
}

// grpcServer serves g on sock, within the connection limit. Shutting down
// ends the service's streams (endStreams), then stops gracefully, or
// forcibly at the deadline.
func (a *Agent) grpcServer(sock unixSocket, g *grpc.Server, endStreams func()) (server, error) {
	name := sock.name
	cfg := unixsock.Config{Path: sock.path, Mode: sock.perm, DirMode: 0o755, Peers: sock.peers.policy(), Name: name, Logger: a.cfg.Logger}
	if sock.gid >= 0 {
		cfg.GID = &sock.gid
	}
	ul, err := unixsock.Listen(cfg)
	if err != nil {
		return server{}, fmt.Errorf("%s: %w", name, err)
	}
	lis := newCappedListener(ul, name, a.cfg.Limits.MaxConnections, a.cfg.Logger)
	return server{
		serve: func() error {
			if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		},
		shutdown: func(ctx context.Context) {
			endStreams()
			grpcx.Stop(ctx, g)
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

func readBundleFile(path string) (*trust.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	b, err := trust.ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("CA bundle %s: %w", path, err)
	}
	return b, nil
}
