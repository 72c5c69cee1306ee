package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/google/renameio/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/datadir"
	"github.com/meshca/meshca/issuer"
)

// issuerGCPercent is the issuer's garbage-collection target unless GOGC is
// set. Issuance allocates tens of kilobytes of short-lived garbage per
// certificate over a live heap of a few tens of megabytes, so the default
// 100 collects several times a second under load; 400 cuts that fourfold
// for a heap a few times larger (docs/benchmarks.md, "Issuance through the whole gRPC path"). The agent,
// which must stay small, keeps Go's default.
const issuerGCPercent = 400

func setIssuerGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(issuerGCPercent)
	}
}

// caStack is what `meshca dev` and `meshca issuer serve` both run: an
// intermediate (minted under a local file root, or obtained from the
// central root when upstream is set) rotated before it expires, an issuer
// recording into a store, served over TLS. Only the attestor and what is
// printed differ.
type caStack struct {
	// name prefixes the "serving" and "stopped" log lines.
	name                                   string
	trustDomain, cluster, dataDir, rootDir string
	listen                                 string
	hosts                                  []string
	intermediateTTL                        time.Duration
	leafTTL, leafMinTTL, leafMaxTTL        time.Duration
	store                                  storeConfig
	// upstream, when enabled, replaces the local file root.
	upstream upstreamConfig
	// adminSocket is the Unix socket of the admin API; adminTLS optionally
	// serves it over mutual TLS too.
	adminSocket      string
	adminSocketAllow socketAllowConfig
	adminTLS         adminTLSConfig
	revocation       revocationConfig
	// limits bound the gRPC listener; zero values are the defaults.
	limits   limitsConfig
	attestor func() (attest.Attestor, error)
	banner   func(out io.Writer, addr, bundlePath string)
}

// intermediateSource is where the stack's intermediates come from: the
// central root when upstream is set, else the local file root. Either
// way an issuer.Intermediates loop rotates them.
type intermediateSource struct {
	// authority is the first intermediate, bundle the trust bundle
	// received with it and roots that bundle's own roots.
	authority *ca.Authority
	bundle    *ca.TrustBundle
	roots     *ca.Bundle
	// root mints the next intermediates: upstream or a *issuer.LocalRoot.
	root issuer.RootClient
	// upstream is the central root; nil for a local root.
	upstream *issuer.Upstream
	// localRoot is the local file root (it signs a CRL too); nil upstream.
	localRoot *ca.Authority
	// rootExpires is logged at start.
	rootExpires time.Time
}

// newIntermediateSource obtains the first intermediate, from the central
// root when upstream is set, else from the local file root.
func newIntermediateSource(ctx context.Context, s caStack, td spiffeid.TrustDomain, log *slog.Logger) (intermediateSource, error) {
	if s.upstream.enabled() {
		return enrol(ctx, s, td, log)
	}
	return localIntermediate(ctx, s, td)
}

// publisher is where the issuer's CRLs go besides its agents: the central
// root, or nil (never a nil *Upstream).
func (src intermediateSource) publisher() issuer.CRLPublisher {
	if src.upstream == nil {
		return nil
	}
	return src.upstream
}

// crlRoots are the roots the issuer signs CRLs with: the local root.
func (src intermediateSource) crlRoots() []*ca.Authority {
	if src.localRoot == nil {
		return nil
	}
	return []*ca.Authority{src.localRoot}
}

// relayed is the bundle the issuer serves to agents when it relays the
// central root's, nil when it serves its own (issuer.ServerConfig.Bundles).
func (src intermediateSource) relayed(loop *issuer.Intermediates) issuer.BundleSource {
	if src.upstream == nil {
		return nil
	}
	return loop
}

// serveCA builds the stack and serves until ctx is done.
func serveCA(ctx context.Context, s caStack, out io.Writer) error {
	log := slog.Default()
	setIssuerGC()
	td, err := spiffeid.TrustDomainFromString(s.trustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", s.trustDomain, err)
	}
	// Before anything else touches the data dir: a second process on it
	// would share the keys, the database and the admin socket.
	lock, err := datadir.Acquire(s.dataDir)
	if err != nil {
		return err
	}
	defer lock.Release()
	src, err := newIntermediateSource(ctx, s, td, log)
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
	stopCheckpoints, err := startCheckpoints(db, s.store.Checkpoint, s.dataDir, "cluster/"+s.cluster, log)
	if err != nil {
		return err
	}
	defer stopCheckpoints()
	p, err := s.build(ctx, td, src, att, db, log)
	if err != nil {
		return err
	}
	ls, err := s.openListeners(p.mtls != nil, log)
	if err != nil {
		return err
	}
	bundlePath := filepath.Join(s.dataDir, "bundle.pem")
	if err := renameio.WriteFile(bundlePath, src.roots.PEM(), 0o644); err != nil {
		ls.close()
		return fmt.Errorf("write bundle: %w", err)
	}
	log.Info(s.name+" serving", "addr", ls.grpc.Addr().String(), "trust_domain", td.Name(), "cluster", s.cluster,
		"root_expires", src.rootExpires, "intermediate_expires", src.authority.Certificate.NotAfter, "upstream", s.upstream.Address)
	s.banner(out, ls.grpc.Addr().String(), bundlePath)
	if err := p.run(ctx, ls, bundlePath, log); err != nil {
		return err
	}
	log.Info(s.name + " stopped")
	return nil
}

// adminCRLs are the CRLs admin certificates are checked against: the
// issuer's own (its local root's lists what its admin socket revoked) and
// those the central root publishes in the relayed bundle (its root CRLs
// list what the root's admin socket revoked).
func adminCRLs(own *issuer.CRLSigner, relayed issuer.BundleSource, td spiffeid.TrustDomain) []ca.CRL {
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

func (s caStack) adminSocketPath() string {
	if s.adminSocket != "" {
		return s.adminSocket
	}
	return filepath.Join(s.dataDir, "admin.sock")
}

// localIntermediate mints the first in-memory intermediate under the file
// root the store records for every replica (standaloneRoot), for the
// serving names s.hosts; its LocalRoot mints the next ones.
func localIntermediate(ctx context.Context, s caStack, td spiffeid.TrustDomain) (intermediateSource, error) {
	root, err := standaloneRoot(ctx, s, td)
	if err != nil {
		return intermediateSource{}, err
	}
	local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{
		Root: root, TrustDomain: td, Cluster: s.cluster, ServingNames: s.hosts, TTL: s.intermediateTTL,
	})
	if err != nil {
		return intermediateSource{}, err
	}
	inter, tb, err := local.NewIntermediate(ctx)
	if err != nil {
		return intermediateSource{}, err
	}
	if na := inter.Certificate.NotAfter; !na.Before(root.Certificate.NotAfter) && time.Until(na) < time.Hour {
		return intermediateSource{}, errors.New("intermediate would expire within the hour: the root is about to expire")
	}
	return intermediateSource{
		authority: inter, bundle: tb, roots: tb.OwnRoots(), root: local, localRoot: root, rootExpires: root.Certificate.NotAfter,
	}, nil
}

// enrol obtains the first intermediate from the central root: with the
// stored credential after a restart, else with the join token. While the
// root is unreachable it retries with backoff; a refusal is final.
func enrol(ctx context.Context, s caStack, td spiffeid.TrustDomain, log *slog.Logger) (intermediateSource, error) {
	roots, err := readPEMBundle(s.upstream.BundleFile)
	if err != nil {
		return intermediateSource{}, fmt.Errorf("upstream.bundleFile: %w", err)
	}
	var token, tokenFile string
	if s.upstream.JoinTokenFile != "" {
		data, err := os.ReadFile(s.upstream.JoinTokenFile)
		switch {
		case err == nil:
			token, tokenFile = strings.TrimSpace(string(data)), s.upstream.JoinTokenFile
		case errors.Is(err, os.ErrNotExist):
			// Fine after the first enrolment: the credential is used.
		default:
			return intermediateSource{}, fmt.Errorf("upstream.joinTokenFile: %w", err)
		}
	}
	up, err := issuer.NewUpstream(issuer.UpstreamConfig{
		Address: s.upstream.Address, ServerName: s.upstream.ServerName, Roots: roots, TrustDomain: td, Cluster: s.cluster,
		ServingNames: s.hosts, JoinToken: token, JoinTokenFile: tokenFile, Replica: s.upstream.replica(os.Hostname),
		CredentialDir: filepath.Join(s.dataDir, "credential"), Logger: log,
	})
	if err != nil {
		return intermediateSource{}, err
	}
	backoff := time.Second
	for {
		a, tb, err := up.NewIntermediate(ctx)
		if err == nil {
			rootExpires := time.Time{}
			if own := tb.OwnRoots(); own != nil {
				for _, r := range own.Roots() {
					if r.NotAfter.After(rootExpires) {
						rootExpires = r.NotAfter
					}
				}
			}
			return intermediateSource{authority: a, bundle: tb, roots: tb.OwnRoots(), root: up, upstream: up, rootExpires: rootExpires}, nil
		}
		if errors.Is(err, issuer.ErrRejected) || ctx.Err() != nil {
			return intermediateSource{}, err
		}
		log.Warn("cannot reach the root to obtain an intermediate; retrying", "root", s.upstream.Address, "error", err.Error(), "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return intermediateSource{}, ctx.Err()
		case <-time.After(backoff + rand.N(backoff/2)):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// followBundle rewrites bundle.pem whenever the relayed bundle's own roots
// change, so that clients bootstrapping from the file get current roots.
func followBundle(ctx context.Context, src issuer.BundleSource, path string, log *slog.Logger) {
	var last string
	for {
		b, changed := src.Current()
		if b != nil {
			if own := b.OwnRoots(); own != nil && string(own.PEM()) != last {
				if err := renameio.WriteFile(path, own.PEM(), 0o644); err != nil {
					log.Error("writing bundle.pem failed", "error", err)
				} else {
					last = string(own.PEM())
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func readPEMBundle(path string) (*ca.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ca.ParseBundle(data)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
