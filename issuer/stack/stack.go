// Package stack runs a whole cluster issuer in-process: the intermediate
// (minted under a local file root, or obtained from the central root) and
// the loop that rotates it, the issuer recording into a store, the
// deny-list, CRLs, the JWT-SVID keys, the admin API, audit checkpoints,
// store retention and the gRPC server. `meshca issuer serve` and `meshca dev` run it; tests can
// too, without a process.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/serverdir"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/issuer/rootcm"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
)

// Store is what the stack needs of its database: both backends
// (store/postgres, store/sqlite) implement it.
type Store interface {
	store.Store
	store.RevocationStore
	store.AuditHeadReader
	store.StandaloneRootStore
	store.IssuerCRLStore
	store.JWTAuthorityStore
	// VerifyAuditHead is what the admin API's VerifyAudit reports from.
	VerifyAuditHead(ctx context.Context) (store.ChainHead, error)
}

// Config configures a stack. Zero values take the defaults of the
// components they are passed to.
type Config struct {
	// Name prefixes the "serving" and "stopped" log lines, e.g. "meshca
	// issuer". Required.
	Name string
	// TrustDomain of issued SPIFFE IDs. Required.
	TrustDomain spiffeid.TrustDomain
	// Cluster is the issuer's own cluster. Required.
	Cluster string
	// Clusters are the other clusters the issuer attests, by name: the
	// cluster label values of its metrics besides Cluster.
	Clusters []string
	// DataDir holds bundle.pem, the admin socket by default, the upstream
	// credential and, unless RootDir says otherwise, the local root key.
	// It is locked for the life of Run. Required.
	DataDir string
	// RootDir holds the local file root; empty means DataDir. Unused with
	// Upstream.
	RootDir string
	// Listen is the gRPC (TLS) address; Hosts the serving names.
	Listen string
	Hosts  []string
	// DNSGrants name the identities that may have DNS names in their
	// certificates (issuer.DNSGrant). The local root's intermediates admit
	// exactly those names; under Upstream the cluster's record on the
	// root must list them. Nil means none.
	DNSGrants []issuer.DNSGrant
	// IntermediateTTL is the life of the intermediates of the local root.
	IntermediateTTL time.Duration
	// LeafTTL, LeafMinTTL and LeafMaxTTL: see issuer.Config.
	LeafTTL, LeafMinTTL, LeafMaxTTL time.Duration
	// JWT tunes JWT-SVIDs; zero fields take issuer.JWTConfig's defaults.
	JWT JWT
	// OpenStore opens the database (it runs after DataDir is locked),
	// passing m to its group commit (store.GroupCommitConfig.Metrics); m
	// is nil without a metrics listener. Required. Run closes it.
	OpenStore func(ctx context.Context, m *store.Metrics) (Store, error)
	// Retention prunes expired certificates while the stack runs, when the
	// store is a store.Pruner; nil disables it.
	Retention *store.RetentionConfig
	// Checkpoint places the signed audit checkpoints; its DataDir is
	// DataDir.
	Checkpoint checkpoint.DirConfig
	// Upstream, when set, replaces the local file root by the central root.
	Upstream *Upstream
	// UpstreamPKI, when set, has an upstream PKI (package ca/upstream:
	// step-ca, Vault PKI, Cloud CAS) certify the local root's key instead
	// of self-signing it, and renew that certificate: the upstream's root
	// becomes the workloads' trust anchor, the local root their issuer's
	// CA. The key stays in RootDir, pinned in the store by its public key.
	// Exclusive with Upstream and Plugged.
	UpstreamPKI *upstream.Config
	// Plugged, when set, replaces the local file root by an intermediate
	// CA someone else issued and keeps (Istio's plug-in cacerts): the
	// issuer signs leaves with it directly, follows its files
	// (issuer.PluggedCA) and mints no intermediates, no JWT-SVIDs (their
	// keys' certificates need an intermediate naming the cluster) and no
	// CRLs above it. Exclusive with Upstream and RootDir.
	Plugged *issuer.PluggedCAConfig
	// AdminSocket is the admin API's Unix socket; an empty Path means
	// DATA_DIR/admin.sock.
	AdminSocket adminapi.UnixConfig
	// AdminTLSListen, when set, also serves the admin API over mutual TLS
	// there, to Admins.
	AdminTLSListen string
	Admins         []spiffeid.ID
	// Revocation tunes the deny-list and CRLs.
	Revocation Revocation
	// Limits bound the gRPC listener.
	Limits grpclimit.Config
	// Attestor builds the attestor; it is called once, after the
	// intermediate is obtained. Required.
	Attestor func() (attest.Attestor, error)
	// Serving, when set, is called once the stack serves, with the gRPC
	// address and the path of bundle.pem.
	Serving func(addr, bundlePath string)
	// MetricsListen, when set, is the TCP address of the operations
	// listener: /metrics, /healthz and /readyz (see package ops). Empty
	// means none, and no metrics are collected.
	MetricsListen string
	// ReusePort opens the gRPC and operations listeners with SO_REUSEPORT
	// (ops.ListenTCP), so that replicas on one host network share their
	// ports. False: a port already bound is an error.
	ReusePort bool
	// MetricsServing, when set, is called with the operations listener's
	// bound address once it accepts connections.
	MetricsServing func(addr string)
	// RootConfigMaps, when set, keeps Istio's istio-ca-root-cert ConfigMaps
	// with the stack's bundle: the one relayed from the central root under
	// Upstream, else the local root's. Nil means none are written.
	RootConfigMaps *rootcm.Controller
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Upstream locates the central root.
type Upstream struct {
	// Address and ServerName: see issuer.UpstreamConfig.
	Address, ServerName string
	// BundleFile holds the root certificates trusted at first contact.
	// Required.
	BundleFile string
	// JoinTokenFile holds the join token; a missing file is fine once
	// enrolled.
	JoinTokenFile string
	// Replica names this issuer among the replicas of its cluster (see
	// issuer.UpstreamConfig.Replica); empty means the short host name,
	// which in Kubernetes is the pod name.
	Replica string
}

// JWT tunes JWT-SVIDs; see issuer.JWTConfig.
type JWT struct {
	DefaultTTL, MaxTTL time.Duration
	// IssuerURL is the "iss" claim; empty means none.
	IssuerURL string
}

// Revocation tunes the deny-list and CRLs; see issuer.DenyListConfig and
// issuer.CRLSignerConfig.
type Revocation struct {
	PollInterval, MaxStale, CRLValidity time.Duration
}

// Validate reports the first problem with c. It does not change c.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("stack: name is required")
	case c.TrustDomain.IsZero():
		return errors.New("stack: trust domain is required")
	case c.Cluster == "":
		return errors.New("stack: cluster is required")
	case c.DataDir == "":
		return errors.New("stack: data dir is required")
	case c.OpenStore == nil:
		return errors.New("stack: store is required")
	case c.Attestor == nil:
		return errors.New("stack: attestor is required")
	case c.Upstream != nil && (c.Upstream.Address == "" || c.Upstream.BundleFile == ""):
		return errors.New("stack: upstream needs an address and a bundle file")
	case c.Plugged != nil && (c.Upstream != nil || c.RootDir != ""):
		return errors.New("stack: a plugged intermediate excludes upstream and a root dir")
	case c.UpstreamPKI != nil && (c.Upstream != nil || c.Plugged != nil):
		return errors.New("stack: an upstream PKI certifies the local root: it excludes the central root (upstream) and a plugged intermediate")
	case c.AdminTLSListen != "" && len(c.Admins) == 0:
		return errors.New("stack: admin mTLS needs at least one admin")
	}
	if err := issuer.ValidateDNSGrants(c.DNSGrants, c.TrustDomain); err != nil {
		return err
	}
	if c.Retention != nil {
		if err := c.Retention.Validate(); err != nil {
			return err
		}
	}
	if c.Plugged != nil {
		if err := c.Plugged.Validate(); err != nil {
			return err
		}
	}
	if c.UpstreamPKI != nil {
		if err := c.UpstreamPKI.Validate(); err != nil {
			return err
		}
		if !c.UpstreamPKI.Enabled() {
			return errors.New("stack: upstream PKI without a type")
		}
	}
	return c.Limits.Validate()
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c Config) adminSocket() adminapi.UnixConfig {
	u := c.AdminSocket
	if u.Path == "" {
		u.Path = filepath.Join(c.DataDir, "admin.sock")
	}
	if u.Logger == nil {
		u.Logger = c.logger()
	}
	return u
}

// Run builds the stack and serves until ctx is done or a component fails.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	log := c.logger()
	reg, err := c.newRegistry()
	if err != nil {
		return err
	}
	sm, err := store.NewMetrics(registerer(reg))
	if err != nil {
		return err
	}
	open := func(ctx context.Context) (Store, error) { return c.OpenStore(ctx, sm) }
	db, closeAll, err := serverdir.Open(ctx, c.DataDir, open, c.Checkpoint, "cluster/"+c.Cluster, log)
	if err != nil {
		return err
	}
	defer closeAll()
	src, err := newIntermediateSource(ctx, c, db, log)
	if err != nil {
		return err
	}
	if src.close != nil {
		defer src.close()
	}
	att, err := c.Attestor()
	if err != nil {
		return err
	}
	return c.serve(ctx, src, att, db, opsState{reg: reg, store: sm}, log)
}

// opsState is what the operations listener serves: the registry (nil
// without a metrics listener) and the store's metrics.
type opsState struct {
	reg   *prometheus.Registry
	store *store.Metrics
}

// serve builds the components, writes bundle.pem, opens the listeners and
// runs everything until ctx is done or a component fails.
func (c Config) serve(ctx context.Context, src intermediateSource, att attest.Attestor, db Store, o opsState, log *slog.Logger) error {
	p, err := c.build(ctx, src, att, db, o, log)
	if err != nil {
		return err
	}
	checks := p.readiness(db, o.store, src.upstream, time.Now)
	if o.reg != nil {
		if err := o.reg.Register(ops.ReadyGauge("issuer", checks)); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	p.ops = c.opsRunner(p, o.reg, checks, src.upstream, log)
	// bundle.pem is in place before the port accepts a connection: whoever
	// sees the issuer listening can read the roots to dial it with.
	bundlePath := filepath.Join(c.DataDir, "bundle.pem")
	if err := renameio.WriteFile(bundlePath, src.bundlePEM(), 0o644); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	ls, err := c.openListeners(p.mtls != nil)
	if err != nil {
		return err
	}
	var upstreamAddr string
	if c.Upstream != nil {
		upstreamAddr = c.Upstream.Address
	}
	log.Info(c.Name+" serving", "addr", ls.grpc.Addr().String(), "trust_domain", c.TrustDomain.Name(), "cluster", c.Cluster,
		"root_expires", src.rootExpires, "intermediate_expires", src.authority.Certificate.NotAfter, "upstream", upstreamAddr)
	if c.Serving != nil {
		c.Serving(ls.grpc.Addr().String(), bundlePath)
	}
	if err := p.run(ctx, ls, bundlePath, db, c.Retention, log); err != nil {
		return err
	}
	log.Info(c.Name + " stopped")
	return nil
}

// listeners are the listeners of a stack: gRPC, the admin socket and,
// optionally, admin over mutual TLS.
type listeners struct {
	grpc, admin, adminTLS net.Listener
}

func (l listeners) close() {
	for _, lis := range []net.Listener{l.grpc, l.admin, l.adminTLS} {
		if lis != nil {
			lis.Close()
		}
	}
}

// openListeners opens the stack's listeners, the admin mTLS one when
// withTLS; on an error none stays open.
func (c Config) openListeners(withTLS bool) (listeners, error) {
	var ls listeners
	var err error
	if ls.grpc, err = ops.ListenTCP(c.Listen, c.ReusePort); err != nil {
		return listeners{}, fmt.Errorf("listen: %w", err)
	}
	if ls.admin, err = c.adminSocket().Listen(); err != nil {
		ls.close()
		return listeners{}, err
	}
	if withTLS {
		if ls.adminTLS, err = net.Listen("tcp", c.AdminTLSListen); err != nil {
			ls.close()
			return listeners{}, fmt.Errorf("admin listen: %w", err)
		}
	}
	return ls, nil
}
