package root

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/ops"
)

// serve opens r's listeners and runs r, its bundle files, the federation
// fetcher (nil: none), the bundle endpoint and the metrics of reg until ctx
// ends or one of them fails.
func (c StackConfig) serve(ctx context.Context, r *Root, fetcher *federation.Fetcher, reg *prometheus.Registry, log *slog.Logger) error {
	var ep *federation.Endpoint
	if c.Endpoint != nil {
		var err error
		if ep, err = c.Endpoint.new(r, log); err != nil {
			return err
		}
	}
	td := c.BundleTrustDomain
	if td.IsZero() {
		td = spiffeid.RequireTrustDomainFromString("meshca.invalid")
	}
	// The bundle files are in place before the ports accept connections:
	// whoever sees the root listening can read the roots to dial it with.
	files := &bundleFiles{dir: c.DataDir, td: td, log: log}
	files.write(r)
	ls, err := c.openListeners(r, ep != nil, log)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.Run(ctx) })
	g.Go(func() error { return r.Serve(ctx, ls.grpc) })
	g.Go(func() error { return r.ServeAdmin(ctx, ls.admin) })
	if ls.mtls != nil {
		g.Go(func() error { return r.serveAdminMTLS(ctx, ls.adminTLS, ls.mtls) })
	}
	g.Go(func() error { return files.follow(ctx, r) })
	if fetcher != nil {
		g.Go(func() error { return fetcher.Run(ctx) })
	}
	if ep != nil {
		g.Go(func() error { return ep.Serve(ctx, ls.federation) })
	}
	if c.MetricsListen != "" {
		oc := ops.Config{Listen: c.MetricsListen, Gatherer: reg, Checks: r.Checks(), Logger: log}
		g.Go(func() error { return ops.Run(ctx, oc, c.MetricsServing) })
	}
	var epAddr string
	if c.Endpoint != nil {
		epAddr = c.Endpoint.Listen
	}
	log.Info("meshca root serving", "addr", ls.grpc.Addr().String(), "admin_socket", c.AdminSocketPath(), "key", keysKind(c.Root.Keys),
		"federation", epAddr)
	if c.Serving != nil {
		c.Serving(ls.grpc.Addr().String(), c.AdminSocketPath())
	}
	err = g.Wait()
	log.Info("meshca root stopped")
	return err
}

// keysKind names where k keeps the root keys, for the log.
func keysKind(k Keys) string {
	if _, ok := k.(VaultKeys); ok {
		return "vault"
	}
	return "file"
}

// newFetcher follows the federation relationships of c; nil without any.
func (c StackConfig) newFetcher(log *slog.Logger) (*federation.Fetcher, error) {
	if len(c.Federation) == 0 {
		return nil, nil
	}
	fc := federation.FetcherConfig{RefreshInterval: c.FederationRefresh, Logger: log.With("component", "federation")}
	for _, f := range c.Federation {
		rel, err := f.Load()
		if err != nil {
			return nil, err
		}
		fc.Relationships = append(fc.Relationships, rel)
	}
	return federation.NewFetcher(fc)
}

// new makes the bundle endpoint, serving r's bundle.
func (e Endpoint) new(r *Root, log *slog.Logger) (*federation.Endpoint, error) {
	ec := federation.EndpointConfig{TrustDomain: e.TrustDomain, Source: r, Profile: e.Profile, OIDCIssuer: e.OIDCIssuer,
		Logger: log.With("component", "bundle-endpoint")}
	if e.Profile == federation.ProfileHTTPSWeb {
		ec.CertFile, ec.KeyFile = e.CertFile, e.KeyFile
	} else {
		id, err := spiffeid.FromSegments(e.TrustDomain, "meshca", "bundle-endpoint")
		if err != nil {
			return nil, err
		}
		get, err := r.svidCertificate(id)
		if err != nil {
			return nil, err
		}
		ec.SPIFFEID, ec.GetCertificate = id, get
	}
	return federation.NewEndpoint(ec)
}

// stackListeners are a root stack's listeners; federation, adminTLS and
// mtls are nil when not configured.
type stackListeners struct {
	grpc, admin, adminTLS, federation net.Listener
	mtls                              *adminapi.MTLS
}

func (l stackListeners) close() {
	for _, lis := range []net.Listener{l.grpc, l.admin, l.adminTLS, l.federation} {
		if lis != nil {
			lis.Close()
		}
	}
}

func listenTCP(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

// openListeners opens r's listeners (the bundle endpoint's when
// federation); on an error none stays open.
func (c StackConfig) openListeners(r *Root, federation bool, log *slog.Logger) (stackListeners, error) {
	var ls stackListeners
	fail := func(err error) (stackListeners, error) {
		ls.close()
		return stackListeners{}, err
	}
	var err error
	if ls.grpc, err = listenTCP(c.Listen); err != nil {
		return fail(err)
	}
	if federation {
		if ls.federation, err = listenTCP(c.Endpoint.Listen); err != nil {
			return fail(err)
		}
	}
	if c.AdminTLSListen != "" {
		get, err := r.ServingCertificate()
		if err != nil {
			return fail(err)
		}
		if ls.mtls, err = adminapi.NewMTLS(adminapi.MTLSConfig{
			GetCertificate: get, Roots: r.OwnAuthorities, Admins: c.Admins, Revocations: r, CRLs: r.RootCRLs, Logger: log,
		}); err != nil {
			return fail(err)
		}
		if ls.adminTLS, err = listenTCP(c.AdminTLSListen); err != nil {
			return fail(err)
		}
	}
	ucfg := c.AdminSocket
	ucfg.Path = c.AdminSocketPath()
	if ucfg.Logger == nil {
		ucfg.Logger = log
	}
	if ls.admin, err = ucfg.Listen(); err != nil {
		return fail(err)
	}
	return ls, nil
}
