package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/issuer"
)

// caStack is what `meshca dev` and `meshca issuer serve` both run: a file
// root, an in-memory intermediate under it, an issuer recording into a store,
// served over TLS. Only the attestor and what is printed differ.
type caStack struct {
	// name prefixes the "serving" and "stopped" log lines.
	name                                   string
	trustDomain, cluster, dataDir, rootDir string
	listen                                 string
	hosts                                  []string
	intermediateTTL                        time.Duration
	leafTTL, leafMinTTL, leafMaxTTL        time.Duration
	store                                  storeConfig
	attestor                               func() (attest.Attestor, error)
	banner                                 func(out io.Writer, addr, bundlePath string)
}

// serveCA builds the stack and serves until ctx is done.
func serveCA(ctx context.Context, s caStack, out io.Writer) error {
	log := slog.Default()
	td, err := spiffeid.TrustDomainFromString(s.trustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", s.trustDomain, err)
	}
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	root, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: cmpOr(s.rootDir, s.dataDir)})
	if err != nil {
		return err
	}
	inter, err := newIntermediate(root, td, s.cluster, s.intermediateTTL)
	if err != nil {
		return err
	}
	bundle, err := ca.NewBundle(root.Certificate)
	if err != nil {
		return err
	}
	att, err := s.attestor()
	if err != nil {
		return err
	}
	db, err := openStore(ctx, s.store, s.dataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	iss, err := issuer.New(issuer.Config{
		TrustDomain: td, Cluster: s.cluster, Authority: inter, Bundle: bundle, Attestor: att, Recorder: db,
		DefaultTTL: s.leafTTL, MinTTL: s.leafMinTTL, MaxTTL: s.leafMaxTTL, Logger: log,
	})
	if err != nil {
		return err
	}
	srv, err := issuer.NewServer(issuer.ServerConfig{Issuer: iss, Hosts: s.hosts})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	bundlePath := filepath.Join(s.dataDir, "bundle.pem")
	if err := renameio.WriteFile(bundlePath, bundle.PEM(), 0o644); err != nil {
		lis.Close()
		return fmt.Errorf("write bundle: %w", err)
	}
	log.Info(s.name+" serving", "addr", lis.Addr().String(), "trust_domain", td.Name(), "cluster", s.cluster,
		"root_expires", root.Certificate.NotAfter, "intermediate_expires", inter.Certificate.NotAfter)
	s.banner(out, lis.Addr().String(), bundlePath)
	if err := srv.Serve(ctx, lis); err != nil {
		return err
	}
	log.Info(s.name + " stopped")
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
