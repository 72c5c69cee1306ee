package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/sync/errgroup"

	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/datadir"
	"github.com/meshca/meshca/trust"
)

func newRootCACommand() *cobra.Command {
	cmd := &cobra.Command{Use: "root", Short: "Central root CA commands"}
	var configPath string
	serve := &cobra.Command{
		Use:   "serve --config root.yaml",
		Short: "Serve the central root CA: issuer enrolment, intermediates, the trust bundle",
		Long: `meshca root serve runs the central root CA. Its key is a Vault Transit key (key.kind
vault) or a file in DATA_DIR (key.kind file). Cluster issuers enrol with a one-time join
token from "meshca admin cluster add", then renew their name-constrained intermediates
with the credential they received. The trust bundle (roots, and federated bundles) is
published to issuers, which relay it to agents, and written to DATA_DIR/bundle.pem and
DATA_DIR/bundle.spiffe.json. Admin commands reach it on DATA_DIR/admin.sock.
See deploy/root.yaml and deploy/root-vault.yaml.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return errors.New("--config is required")
			}
			cfg := defaultRootConfig()
			if err := loadConfig(configPath, &cfg); err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return fmt.Errorf("config %s: %w", configPath, err)
			}
			if err := reloadRoot(cmd, configPath, cfg); err != nil {
				return err
			}
			return runRoot(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	serve.Flags().StringVar(&configPath, "config", "", "YAML config file (required; see deploy/root.yaml)")
	cmd.AddCommand(serve)
	return cmd
}

// runRoot wires a validated root config and serves until ctx is done.
func runRoot(ctx context.Context, cfg rootConfig, out io.Writer) error {
	log := slog.Default()
	// Before anything else touches the data dir: a second root on it would
	// share the keys, the database and the admin socket.
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Release()
	db, err := openBackend(ctx, cfg.Store, cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	stopCheckpoints, err := startCheckpoints(db, cfg.Store.Checkpoint, cfg.DataDir, "root", log)
	if err != nil {
		return err
	}
	defer stopCheckpoints()
	fetcher, err := newFederationFetcher(cfg.Federation, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := root.New(ctx, cfg.serverConfig(db, fetcher, reg, log))
	if err != nil {
		return err
	}
	defer srv.Close()
	var ep *federation.Endpoint
	if cfg.Federation.Listen != "" {
		if ep, err = newBundleEndpoint(cfg.Federation, srv, log); err != nil {
			return err
		}
	}
	ls, err := cfg.openListeners(srv, ep != nil, log)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return srv.Serve(ctx, ls.grpc) })
	g.Go(func() error { return srv.ServeAdmin(ctx, ls.admin) })
	if ls.mtls != nil {
		g.Go(func() error { return srv.ServeAdminMTLS(ctx, ls.adminTLS, ls.mtls) })
	}
	g.Go(func() error { return writeBundles(ctx, srv, cfg, log) })
	if fetcher != nil {
		g.Go(func() error { return fetcher.Run(ctx) })
	}
	if ep != nil {
		g.Go(func() error { return ep.Serve(ctx, ls.federation) })
	}
	if cfg.MetricsListen != "" {
		g.Go(func() error { return serveMetrics(ctx, cfg.MetricsListen, reg) })
	}
	log.Info("meshca root serving", "addr", ls.grpc.Addr().String(), "admin_socket", cfg.adminSocket(), "key", cfg.Key.Kind,
		"federation", cfg.Federation.Listen)
	fmt.Fprintf(out, "meshca root is serving on %s (TLS); admin socket %s; bundle %s\n", ls.grpc.Addr(), cfg.adminSocket(),
		filepath.Join(cfg.DataDir, "bundle.pem"))
	err = g.Wait()
	log.Info("meshca root stopped")
	return err
}

// serverConfig maps cfg to the root server's configuration, over the
// store db, following the federated bundles of fetcher (nil: none) and
// registering metrics with reg.
func (cfg rootConfig) serverConfig(db backend, fetcher *federation.Fetcher, reg *prometheus.Registry, log *slog.Logger) root.Config {
	var trustDomains []string
	if cfg.Federation.TrustDomain != "" {
		trustDomains = append(trustDomains, cfg.Federation.TrustDomain)
	}
	rcfg := root.Config{
		Store: db, Keys: cfg.keys(), Hosts: cfg.Hosts, IssuerServingNames: cfg.IssuerServingNames, TrustDomains: trustDomains,
		RootTTL: time.Duration(cfg.RootTTL), IntermediateTTL: time.Duration(cfg.IntermediateTTL),
		CredentialTTL: time.Duration(cfg.CredentialTTL), PropagationDelay: time.Duration(cfg.Rotation.PropagationDelay),
		AutoRotate: cfg.autoRotate(), Limits: cfg.Limits.grpclimit(), Registerer: reg, Logger: log,
	}
	if cfg.Rotation.PropagationDelay != 0 && time.Duration(cfg.Rotation.PropagationDelay) < root.DefaultTick {
		// Re-evaluate often enough that a short delay (tests, demos) is
		// honoured within a second or so.
		rcfg.Tick = time.Second
	}
	if fetcher != nil {
		rcfg.Federated = fetcher
	}
	return rcfg
}

// rootListeners are the root server's listeners; federation, adminTLS
// and mtls are nil when not configured.
type rootListeners struct {
	grpc, admin, adminTLS, federation net.Listener
	mtls                              *adminapi.MTLS
}

func (l rootListeners) close() {
	for _, lis := range []net.Listener{l.grpc, l.admin, l.adminTLS, l.federation} {
		if lis != nil {
			lis.Close()
		}
	}
}

// openListeners opens the root's listeners (the federation endpoint's
// when federation); on an error none stays open.
func (cfg rootConfig) openListeners(root *root.Root, federation bool, log *slog.Logger) (rootListeners, error) {
	var ls rootListeners
	fail := func(err error) (rootListeners, error) {
		ls.close()
		return rootListeners{}, err
	}
	listen := func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		return l, nil
	}
	var err error
	if ls.grpc, err = listen(cfg.Listen); err != nil {
		return fail(err)
	}
	if federation {
		if ls.federation, err = listen(cfg.Federation.Listen); err != nil {
			return fail(err)
		}
	}
	if cfg.Admin.Listen != "" {
		get, err := root.ServingCertificate()
		if err != nil {
			return fail(err)
		}
		if ls.mtls, err = adminapi.NewMTLS(adminapi.MTLSConfig{
			GetCertificate: get, Roots: root.OwnRoots, Admins: adminIDs(cfg.Admin), Revocations: root, CRLs: root.RootCRLs, Logger: log,
		}); err != nil {
			return fail(err)
		}
		if ls.adminTLS, err = listen(cfg.Admin.Listen); err != nil {
			return fail(err)
		}
	}
	ucfg := cfg.AdminSocketAllow.unixConfig(cfg.adminSocket())
	ucfg.Logger = log
	if ls.admin, err = ucfg.Listen(); err != nil {
		return fail(err)
	}
	return ls, nil
}

// writeBundles keeps DATA_DIR/bundle.pem (the roots, for issuers'
// upstream.bundleFile and agents' --ca-bundle) and bundle.spiffe.json (the
// SPIFFE bundle, for another mesh's federation bundleFile) up to date.
func writeBundles(ctx context.Context, root *root.Root, cfg rootConfig, log *slog.Logger) error {
	pemPath := filepath.Join(cfg.DataDir, "bundle.pem")
	jsonPath := filepath.Join(cfg.DataDir, "bundle.spiffe.json")
	var last []byte
	for {
		var roots []*x509.Certificate
		for _, st := range root.Roots() {
			if st.State.InBundle() {
				roots = append(roots, st.Cert)
			}
		}
		b, changed := root.Current()
		if len(roots) > 0 {
			pemData := trust.EncodeCertificates(roots...)
			if string(pemData) != string(last) {
				if err := renameio.WriteFile(pemPath, pemData, 0o644); err != nil {
					log.Error("writing bundle.pem failed", "error", err)
				} else {
					last = pemData
				}
				td := cfg.Federation.TrustDomain
				if td == "" {
					td = "meshca.invalid"
				}
				sb := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), roots)
				if b != nil {
					sb.SetSequenceNumber(b.Sequence)
				}
				if js, err := sb.Marshal(); err == nil {
					if err := renameio.WriteFile(jsonPath, js, 0o644); err != nil {
						log.Error("writing bundle.spiffe.json failed", "error", err)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(5 * time.Second):
		}
	}
}

func newFederationFetcher(cfg federationConfig, log *slog.Logger) (*federation.Fetcher, error) {
	if len(cfg.FederatesWith) == 0 {
		return nil, nil
	}
	fc := federation.FetcherConfig{RefreshInterval: time.Duration(cfg.RefreshInterval), Logger: log.With("component", "federation")}
	for _, r := range cfg.FederatesWith {
		td := spiffeid.RequireTrustDomainFromString(r.TrustDomain)
		rel := federation.Relationship{TrustDomain: td, URL: r.URL, Profile: federation.Profile(r.Profile)}
		if r.Profile == string(federation.ProfileHTTPSSPIFFE) {
			id, err := spiffeid.FromString(r.EndpointSPIFFEID)
			if err != nil {
				return nil, fmt.Errorf("federation %s: endpointSPIFFEID: %w", td.Name(), err)
			}
			rel.EndpointSPIFFEID = id
			if rel.InitialBundle, err = spiffebundle.Load(td, r.BundleFile); err != nil {
				return nil, fmt.Errorf("federation %s: bundleFile: %w", td.Name(), err)
			}
		}
		if r.CACertFile != "" {
			certs, err := pemutil.ReadCertificateBundle(r.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("federation %s: caCertFile: %w", td.Name(), err)
			}
			rel.WebRoots = x509.NewCertPool()
			for _, c := range certs {
				rel.WebRoots.AddCert(c)
			}
		}
		fc.Relationships = append(fc.Relationships, rel)
	}
	return federation.NewFetcher(fc)
}

func newBundleEndpoint(cfg federationConfig, root *root.Root, log *slog.Logger) (*federation.Endpoint, error) {
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	ec := federation.EndpointConfig{TrustDomain: td, Source: root, Profile: federation.Profile(cfg.Profile), Logger: log.With("component", "bundle-endpoint")}
	if cfg.Profile == string(federation.ProfileHTTPSWeb) {
		ec.CertFile, ec.KeyFile = cfg.CertFile, cfg.KeyFile
	} else {
		id, err := spiffeid.FromSegments(td, "meshca", "bundle-endpoint")
		if err != nil {
			return nil, err
		}
		get, err := root.SVIDCertificate(id)
		if err != nil {
			return nil, err
		}
		ec.SPIFFEID, ec.GetCertificate = id, get
	}
	return federation.NewEndpoint(ec)
}

// serveMetrics serves /metrics until ctx ends.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
