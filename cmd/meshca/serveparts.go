package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// caParts are the components of a CA stack, built by caStack.build and
// started by run.
type caParts struct {
	deny    *issuer.DenyList
	crls    *issuer.CRLSigner
	admin   *issuer.AdminServer
	loop    *issuer.Intermediates
	relayed issuer.BundleSource // nil without a central root
	srv     *issuer.Server
	mtls    *adminapi.MTLS // nil without an admin mTLS listener
}

// build makes the stack's components over the store db, with the
// intermediates of src and the attestor att; the deny-list is loaded.
func (s caStack) build(ctx context.Context, td spiffeid.TrustDomain, src intermediateSource, att attest.Attestor, db backend, log *slog.Logger) (*caParts, error) {
	p := &caParts{}
	var err error
	if p.deny, err = issuer.NewDenyList(issuer.DenyListConfig{
		Store: db, Cluster: s.cluster, PollInterval: time.Duration(s.revocation.PollInterval),
		MaxStale: time.Duration(s.revocation.MaxStale), Logger: log,
	}); err != nil {
		return nil, err
	}
	if err := p.deny.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("load the deny-list: %w", err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: td, Cluster: s.cluster, Authority: src.authority, Bundle: src.roots, Attestor: att, Recorder: db,
		DefaultTTL: s.leafTTL, MinTTL: s.leafMinTTL, MaxTTL: s.leafMaxTTL, DenyList: p.deny, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if p.crls, err = issuer.NewCRLSigner(issuer.CRLSignerConfig{
		Issuer: iss, DenyList: p.deny, Store: db, Validity: time.Duration(s.revocation.CRLValidity), Roots: src.crlRoots(),
		Publisher: src.publisher(), Logger: log,
	}); err != nil {
		return nil, err
	}
	if p.admin, err = issuer.NewAdminServer(issuer.AdminConfig{
		TrustDomain: td, Cluster: s.cluster, Store: db, DenyList: p.deny, Root: src.localRoot, Logger: log,
	}); err != nil {
		return nil, err
	}
	if p.loop, err = issuer.NewIntermediates(issuer.IntermediatesConfig{Issuer: iss, Root: src.root, Bundle: src.bundle, Logger: log}); err != nil {
		return nil, err
	}
	p.relayed = src.relayed(p.loop)
	if p.srv, err = issuer.NewServer(issuer.ServerConfig{
		Issuer: iss, Hosts: s.hosts, CRLs: p.crls, Bundles: p.relayed, Limits: s.limits.grpclimit(),
	}); err != nil {
		return nil, err
	}
	if s.adminTLS.Listen != "" {
		if p.mtls, err = adminapi.NewMTLS(adminapi.MTLSConfig{
			GetCertificate: p.srv.GetCertificate, Roots: iss.Bundle, Admins: adminIDs(s.adminTLS), Revocations: p.deny,
			CRLs: func() []trust.CRL { return adminCRLs(p.crls, p.relayed, td) }, Logger: log,
		}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// caListeners are the listeners of a CA stack: gRPC, the admin socket and,
// optionally, admin over mutual TLS.
type caListeners struct {
	grpc, admin, adminTLS net.Listener
}

func (l caListeners) close() {
	for _, lis := range []net.Listener{l.grpc, l.admin, l.adminTLS} {
		if lis != nil {
			lis.Close()
		}
	}
}

// openListeners opens the stack's listeners, the admin mTLS one when
// withTLS; on an error none stays open.
func (s caStack) openListeners(withTLS bool, log *slog.Logger) (caListeners, error) {
	var ls caListeners
	var err error
	if ls.grpc, err = net.Listen("tcp", s.listen); err != nil {
		return caListeners{}, fmt.Errorf("listen: %w", err)
	}
	ucfg := s.adminSocketAllow.unixConfig(s.adminSocketPath())
	ucfg.Logger = log
	if ls.admin, err = ucfg.Listen(); err != nil {
		ls.close()
		return caListeners{}, err
	}
	if withTLS {
		if ls.adminTLS, err = net.Listen("tcp", s.adminTLS.Listen); err != nil {
			ls.close()
			return caListeners{}, fmt.Errorf("admin listen: %w", err)
		}
	}
	return ls, nil
}

// run serves on ls and runs the stack's loops until ctx ends or one of
// them fails; bundlePath follows the relayed bundle.
func (p *caParts) run(ctx context.Context, ls caListeners, bundlePath string, log *slog.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.srv.Serve(gctx, ls.grpc) })
	g.Go(func() error { return p.deny.Run(gctx) })
	g.Go(func() error { return p.crls.Run(gctx) })
	g.Go(func() error { return p.admin.ServeUnix(gctx, ls.admin) })
	if ls.adminTLS != nil {
		g.Go(func() error { return p.admin.ServeMTLS(gctx, ls.adminTLS, p.mtls) })
	}
	g.Go(func() error { return p.loop.Run(gctx) })
	if p.relayed != nil {
		g.Go(func() error { followBundle(gctx, p.relayed, bundlePath, log); return nil })
	}
	return g.Wait()
}
