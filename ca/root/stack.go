package root

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/serverdir"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
)

// StackStore is what a root stack needs of its database: both backends
// implement it.
type StackStore interface {
	Store
	store.AuditHeadReader
	io.Closer
}

// StackConfig configures RunStack: a root with its listeners, bundle files,
// federation, metrics and audit checkpoints, as `meshca root serve` runs
// it. Zero values take the defaults of the components they are passed to.
type StackConfig struct {
	// Root configures the root; RunStack sets its Store, Federated,
	// Registerer, Logger and Status, and a Tick of 1s when PropagationDelay is
	// shorter than DefaultTick (so that a short delay is honoured within a
	// second or so).
	Root Config
	// DataDir holds bundle.pem, bundle.spiffe.json, the admin socket by
	// default and the checkpoints; it is locked for the life of RunStack.
	// Required.
	DataDir string
	// OpenStore opens the database once DataDir is locked. Required.
	// RunStack closes it.
	OpenStore func(ctx context.Context) (StackStore, error)
	// Checkpoint places the signed audit checkpoints; its DataDir is
	// DataDir.
	Checkpoint checkpoint.DirConfig
	// Listen is the issuer-facing gRPC address.
	Listen string
	// AdminSocket is the admin API's Unix socket; an empty Path means
	// DATA_DIR/admin.sock.
	AdminSocket adminapi.UnixConfig
	// AdminTLSListen, when set, also serves the admin API over mutual TLS
	// there, to Admins.
	AdminTLSListen string
	Admins         []spiffeid.ID
	// BundleTrustDomain names the SPIFFE bundle in bundle.spiffe.json;
	// zero means meshca.invalid.
	BundleTrustDomain spiffeid.TrustDomain
	// Federation fetches other meshes' bundles; no relationships means
	// none.
	Federation []federation.RelationshipFiles
	// FederationRefresh is the fetcher's refresh interval; see
	// federation.FetcherConfig.
	FederationRefresh time.Duration
	// Endpoint, when set, serves this mesh's SPIFFE bundle endpoint.
	Endpoint *Endpoint
	// MetricsListen, when set, is the ops listener's address: /metrics,
	// /healthz and /readyz (Root.Checks).
	MetricsListen string
	// MetricsServing, when set, is called with the ops listener's address
	// once it accepts connections.
	MetricsServing func(addr string)
	// Serving, when set, is called once the root serves, with its gRPC
	// address and its admin socket's path.
	Serving func(addr, adminSocket string)
	// Upstream, when enabled, is the upstream PKI that issues the roots'
	// CA certificates (Config.Upstream); RunStack connects to it before
	// the first root is created. The zero value means self-signed roots.
	Upstream upstream.Config
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Endpoint is the SPIFFE bundle endpoint of a root stack.
type Endpoint struct {
	// Listen is its address. Required.
	Listen string
	// TrustDomain whose bundle it serves. Required.
	TrustDomain spiffeid.TrustDomain
	// Profile is ProfileHTTPSSPIFFE (an SVID for
	// spiffe://TD/meshca/bundle-endpoint signed by the root) or
	// ProfileHTTPSWeb (CertFile and KeyFile).
	Profile           federation.Profile
	CertFile, KeyFile string
	// OIDCIssuer, when set, also serves OIDC discovery for the trust
	// domain's JWT-SVIDs (see federation.EndpointConfig.OIDCIssuer).
	OIDCIssuer string
}

// Validate reports the first problem with c. It does not change c.
func (c StackConfig) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("root stack: data dir is required")
	case c.OpenStore == nil:
		return errors.New("root stack: store is required")
	case c.AdminTLSListen != "" && len(c.Admins) == 0:
		return errors.New("root stack: admin mTLS needs at least one admin")
	case c.Endpoint != nil && (c.Endpoint.Listen == "" || c.Endpoint.TrustDomain.IsZero()):
		return errors.New("root stack: the bundle endpoint needs an address and a trust domain")
	}
	if err := c.Upstream.Validate(); err != nil {
		return fmt.Errorf("root stack: %w", err)
	}
	return c.Root.Limits.Validate()
}

func (c StackConfig) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// AdminSocketPath is where the admin socket is.
func (c StackConfig) AdminSocketPath() string {
	if c.AdminSocket.Path != "" {
		return c.AdminSocket.Path
	}
	return filepath.Join(c.DataDir, "admin.sock")
}

// rootConfig is c.Root over db, following fetcher (nil: none) and
// registering metrics with reg.
func (c StackConfig) rootConfig(db Store, fetcher *federation.Fetcher, reg prometheus.Registerer, log *slog.Logger) Config {
	rc := c.Root
	rc.Store, rc.Registerer, rc.Logger = db, reg, log
	cp := c.Checkpoint
	cp.DataDir = c.DataDir
	rc.Status = StatusInfo{
		Listening: adminapi.Listening{
			GRPC: c.Listen, AdminSocket: c.AdminSocketPath(), AdminTLS: c.AdminTLSListen, Metrics: c.MetricsListen,
		},
		CheckpointDir: cp.Path(),
	}
	if !c.BundleTrustDomain.IsZero() {
		rc.Status.TrustDomain = c.BundleTrustDomain.Name()
	}
	if rc.Tick == 0 && rc.PropagationDelay != 0 && rc.PropagationDelay < defaultTick {
		rc.Tick = time.Second
	}
	if fetcher != nil {
		rc.Federated = fetcher
	}
	return rc
}

// RunStack runs the root stack c until ctx is done or a component fails.
func RunStack(ctx context.Context, c StackConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	log := c.logger()
	db, closeAll, err := serverdir.Open(ctx, c.DataDir, c.OpenStore, c.Checkpoint, "root", log)
	if err != nil {
		return err
	}
	defer closeAll()
	fetcher, err := c.newFetcher(log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rc := c.rootConfig(db, fetcher, reg, log)
	if c.Upstream.Enabled() {
		up, err := upstream.New(ctx, c.Upstream)
		if err != nil {
			return fmt.Errorf("root stack: %w", err)
		}
		defer up.Close()
		rc.Upstream = up
	}
	r, err := New(ctx, rc)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := ops.Register(reg, ops.ReadyGauge("root", r.Checks())); err != nil {
		return err
	}
	return c.serve(ctx, r, fetcher, reg, log)
}
