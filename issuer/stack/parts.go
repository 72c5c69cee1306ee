package stack

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/issuer/rootcm"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// parts are the components of a stack, built by Config.build and started
// by run.
type parts struct {
	deny    *issuer.DenyList
	crls    *issuer.CRLSigner
	shared  *issuer.SharedCRLs // nil unless on a local root: every replica's CRLs
	jwt     *issuer.JWTKeys    // nil on a plugged intermediate
	jwts    *issuer.SharedJWTs // nil unless on a local root with JWT keys: every replica's keys
	admin   *issuer.AdminServer
	loop    *issuer.Intermediates // nil on a plugged intermediate
	plugged *issuer.PluggedCA     // nil unless on a plugged intermediate
	relayed issuer.BundleSource   // nil without a central root or an upstream PKI
	// renewing renews the local root's certificate from an upstream PKI;
	// nil without one.
	renewing *issuer.LocalRoot
	srv      *issuer.Server
	mtls     *adminapi.MTLS // nil without an admin mTLS listener
	iss      *issuer.Issuer
	ca       *issuer.CAMetrics  // nil without metrics
	rootCMs  *rootcm.Controller // nil unless Config.RootConfigMaps
	// ops runs the operations listener, the health service's follower and
	// the CA metrics until ctx ends; set by serve before run.
	ops func(ctx context.Context) error
}

// build makes the stack's components over the store db, with the
// intermediates of src and the attestor att; the deny-list is loaded.
func (c Config) build(ctx context.Context, src intermediateSource, att attest.Attestor, db Store, o opsState, log *slog.Logger) (*parts, error) {
	reg := registerer(o.reg)
	p := &parts{}
	var err error
	if p.deny, err = issuer.NewDenyList(issuer.DenyListConfig{
		Store: countedLister{db, o.store}, Cluster: c.Cluster, PollInterval: c.Revocation.PollInterval, MaxStale: c.Revocation.MaxStale, Logger: log,
	}); err != nil {
		return nil, err
	}
	if err := p.deny.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("load the deny-list: %w", err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: c.TrustDomain, Cluster: c.Cluster, Authority: src.authority, Bundle: src.roots, ExternalCA: src.plugged != nil,
		Attestor: att, Recorder: db, DefaultTTL: c.LeafTTL, MinTTL: c.LeafMinTTL, MaxTTL: c.LeafMaxTTL, DenyList: p.deny,
		Logger: log, Metrics: reg, MetricsClusters: c.Clusters,
		DNSGrants: c.DNSGrants,
	})
	if err != nil {
		return nil, err
	}
	p.iss = iss
	if p.ca, err = issuer.NewCAMetrics(reg, c.Cluster); err != nil {
		return nil, err
	}
	if p.crls, err = issuer.NewCRLSigner(issuer.CRLSignerConfig{
		Issuer: iss, DenyList: p.deny, Store: db, Validity: c.Revocation.CRLValidity, Root: src.localCA(),
		Publisher: src.publisher(), Logger: log,
	}); err != nil {
		return nil, err
	}
	var served issuer.CRLSource = p.crls
	if src.localRoot != nil {
		if p.shared, err = issuer.NewSharedCRLs(issuer.SharedCRLsConfig{
			Own: p.crls, Store: db, Root: src.localCA(), Cluster: c.Cluster, PollInterval: c.Revocation.PollInterval, Logger: log,
		}); err != nil {
			return nil, err
		}
		served = p.shared
	}
	if err := c.buildRotation(p, src, log); err != nil {
		return nil, err
	}
	var servedJWTs issuer.JWTSource
	if src.localRoot != nil && p.jwt != nil {
		if p.jwts, err = issuer.NewSharedJWTs(issuer.SharedJWTsConfig{
			Own: p.jwt, Store: db, Root: src.localCA(), TrustDomain: c.TrustDomain, Cluster: c.Cluster,
			PollInterval: c.Revocation.PollInterval, Logger: log,
		}); err != nil {
			return nil, err
		}
		servedJWTs = p.jwts
	}
	p.rootCMs = c.RootConfigMaps
	if p.admin, err = issuer.NewAdminServer(c.adminConfig(iss, src, p, db, log)); err != nil {
		return nil, err
	}
	if p.srv, err = issuer.NewServer(issuer.ServerConfig{
		Issuer: iss, Hosts: c.Hosts, CRLs: served, JWT: p.jwt, JWTAuthorities: servedJWTs, Bundles: p.relayed, Limits: c.Limits,
	}); err != nil {
		return nil, err
	}
	if c.AdminTLSListen != "" {
		if p.mtls, err = adminapi.NewMTLS(adminapi.MTLSConfig{
			GetCertificate: p.srv.GetCertificate, Roots: func() *trust.Bundle { return adminRoots(iss, p.relayed) }, Admins: c.Admins, Revocations: p.deny,
			CRLs: func() []trust.CRL { return adminCRLs(p.crls, p.relayed, c.TrustDomain) }, Logger: log,
		}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// buildRotation makes what renews the issuer's CAs: the intermediates loop
// and the JWT-SVID keys, or, on a plugged intermediate, only the follower
// of its files.
func (c Config) buildRotation(p *parts, src intermediateSource, log *slog.Logger) error {
	if src.plugged != nil {
		p.plugged = src.plugged
		log.Warn("serving on a plugged intermediate CA: meshca cannot renew it, and issues no JWT-SVIDs",
			"serial", trust.SerialHex(src.authority.Certificate.SerialNumber), "not_after", src.authority.Certificate.NotAfter)
		return nil
	}
	var err error
	if p.jwt, err = issuer.NewJWTKeys(issuer.JWTConfig{
		Issuer: p.iss, DefaultTTL: c.JWT.DefaultTTL, MaxTTL: c.JWT.MaxTTL, IssuerURL: c.JWT.IssuerURL, Publisher: src.jwtPublisher(), Logger: log,
	}); err != nil {
		return err
	}
	if p.loop, err = issuer.NewIntermediates(issuer.IntermediatesConfig{Issuer: p.iss, Root: src.root, Bundle: src.bundle, Logger: log}); err != nil {
		return err
	}
	p.relayed, p.renewing = src.relayed(p.loop), src.renewing
	return nil
}

// adminConfig configures the admin API of the stack: over db, with the
// issuer iss and what Status reports of the stack.
func (c Config) adminConfig(iss *issuer.Issuer, src intermediateSource, p *parts, db Store, log *slog.Logger) issuer.AdminConfig {
	cp := c.Checkpoint
	cp.DataDir = c.DataDir
	ac := issuer.AdminConfig{
		TrustDomain: c.TrustDomain, Cluster: c.Cluster, Store: db, DenyList: p.deny, Root: src.localCA(), Logger: log,
		Issuer: iss, Bundles: p.relayed, CheckpointDir: cp.Path(),
		Listening: adminapi.Listening{GRPC: c.Listen, AdminSocket: c.adminSocket().Path, AdminTLS: c.AdminTLSListen, Metrics: c.MetricsListen},
	}
	if c.Upstream != nil {
		ac.Upstream = c.Upstream.Address
	}
	return ac
}

// run serves on ls and runs the stack's loops (retention of db's expired
// certificates too, unless retention is nil) until ctx ends or one of them
// fails; bundlePath follows the relayed bundle.
func (p *parts) run(ctx context.Context, ls listeners, bundlePath string, db Store, retention *store.RetentionConfig, log *slog.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.srv.Serve(gctx, ls.grpc) })
	if p.ops != nil {
		g.Go(func() error { return p.ops(gctx) })
	}
	g.Go(func() error { return p.deny.Run(gctx) })
	g.Go(func() error { return p.crls.Run(gctx) })
	if p.shared != nil {
		g.Go(func() error { return p.shared.Run(gctx) })
	}
	if p.jwt != nil {
		g.Go(func() error { return p.jwt.Run(gctx) })
	}
	if p.jwts != nil {
		g.Go(func() error { return p.jwts.Run(gctx) })
	}
	g.Go(func() error { return p.admin.ServeUnix(gctx, ls.admin) })
	if ls.adminTLS != nil {
		g.Go(func() error { return p.admin.ServeMTLS(gctx, ls.adminTLS, p.mtls) })
	}
	if p.loop != nil {
		g.Go(func() error { return p.loop.Run(gctx) })
	}
	if p.renewing != nil {
		g.Go(func() error { return p.renewing.Run(gctx) })
	}
	switch {
	case p.relayed != nil:
		g.Go(func() error { return issuer.FollowBundleFile(gctx, p.relayed, bundlePath, log) })
	case p.plugged != nil:
		// A reload may bring other roots (root-cert.pem replaced too).
		g.Go(func() error { return p.plugged.Run(gctx, p.iss) })
		g.Go(func() error { return issuer.FollowBundleFile(gctx, issuer.LocalBundles(p.iss), bundlePath, log) })
	}
	if p.rootCMs != nil {
		var bundles issuer.BundleSource = issuer.LocalBundles(p.iss)
		if p.relayed != nil {
			bundles = p.relayed
		}
		g.Go(func() error { return p.rootCMs.Run(gctx, bundles) })
	}
	if pr, ok := db.(store.Pruner); ok && retention != nil {
		g.Go(func() error { return store.RunRetention(gctx, pr, *retention) })
	}
	return g.Wait()
}

// adminCRLs are the CRLs admin certificates are checked against: the
// issuer's own (its local root's lists what its admin socket revoked) and
// those the central root publishes in the relayed bundle (its root CRLs
// list what the root's admin socket revoked).
func adminCRLs(own *issuer.CRLSigner, relayed issuer.BundleSource, td spiffeid.TrustDomain) []trust.CRL {
	out, _ := own.Current()
	out = slices.Clone(out)
	if relayed == nil {
		return out
	}
	if b, _ := relayed.Current(); b != nil {
		if d, ok := b.Domain(td); ok {
			out = append(out, d.CRLs...)
		}
	}
	return out
}

// adminRoots are the CAs that sign admin certificates: meshca's own CAs
// of the relayed bundle (its authorities: under an upstream PKI, never the
// upstream's root), else the issuer's own roots.
func adminRoots(iss *issuer.Issuer, relayed issuer.BundleSource) *trust.Bundle {
	if relayed != nil {
		if b, _ := relayed.Current(); b != nil {
			if own := b.OwnAuthorities(); own != nil {
				return own
			}
		}
	}
	return iss.Bundle()
}

// countedLister counts the deny-list's failed loads as store errors.
type countedLister struct {
	issuer.RevocationLister
	m *store.Metrics
}

func (l countedLister) Revocations(ctx context.Context, now time.Time) ([]store.Revocation, error) {
	rs, err := l.RevocationLister.Revocations(ctx, now)
	if err != nil {
		l.m.Failed(store.OpRevocations)
	}
	return rs, err
}
