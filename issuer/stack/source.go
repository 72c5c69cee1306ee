package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// intermediateSource is where the stack's intermediates come from: the
// central root when Upstream is set, else the local file root, and an
// issuer.Intermediates loop rotates them; or an operator's intermediate
// (Plugged), which nothing rotates.
type intermediateSource struct {
	// authority is the first intermediate, bundle the trust bundle
	// received with it and roots that bundle's own roots.
	authority *ca.Authority
	bundle    *trust.TrustBundle
	roots     *trust.Bundle
	// root mints the next intermediates: upstream or a *issuer.LocalRoot.
	root issuer.RootClient
	// upstream is the central root; nil for a local root.
	upstream *issuer.Upstream
	// localRoot is the local file root (it signs a CRL too); nil upstream.
	localRoot *ca.Authority
	// renewing is the local root under an upstream PKI (Config.UpstreamPKI):
	// it renews its certificate (Run) and serves its bundle. Nil otherwise.
	renewing *issuer.LocalRoot
	// close releases what the source holds (the upstream PKI's client);
	// nil when nothing.
	close func()
	// plugged is the operator's intermediate, followed in its files; nil
	// unless Config.Plugged. root is nil then: nothing mints
	// intermediates.
	plugged *issuer.PluggedCA
	// rootExpires is logged at start.
	rootExpires time.Time
}

// newIntermediateSource obtains the first intermediate: from the central
// root when c.Upstream is set, the plugged one when c.Plugged is, else from
// the local file root recorded in db.
func newIntermediateSource(ctx context.Context, c Config, db Store, log *slog.Logger) (intermediateSource, error) {
	switch {
	case c.Upstream != nil:
		return enrol(ctx, c, log)
	case c.Plugged != nil:
		return pluggedIntermediate(*c.Plugged, log)
	}
	return localIntermediate(ctx, c, db, log)
}

// pluggedIntermediate loads the operator's intermediate; it is never
// rotated by the stack, only reloaded from its files.
func pluggedIntermediate(pc issuer.PluggedCAConfig, log *slog.Logger) (intermediateSource, error) {
	if pc.Logger == nil {
		pc.Logger = log
	}
	p, err := issuer.NewPluggedCA(pc, time.Now())
	if err != nil {
		return intermediateSource{}, err
	}
	roots, err := p.Roots()
	if err != nil {
		return intermediateSource{}, err
	}
	var rootExpires time.Time
	for _, r := range roots.Roots() {
		if r.NotAfter.After(rootExpires) {
			rootExpires = r.NotAfter
		}
	}
	return intermediateSource{authority: p.Authority(), roots: roots, plugged: p, rootExpires: rootExpires}, nil
}

// publisher is where the issuer's CRLs go besides its agents: the central
// root, or nil (never a nil *Upstream).
func (src intermediateSource) publisher() issuer.CRLPublisher {
	if src.upstream == nil {
		return nil
	}
	return src.upstream
}

// jwtPublisher is where the issuer's JWT-SVID keys go besides its own
// bundle: the central root; nil for a local root.
func (src intermediateSource) jwtPublisher() issuer.JWTPublisher {
	if src.upstream == nil {
		return nil
	}
	return src.upstream
}

// localCA is the local root's current CA: the renewing LocalRoot under an
// upstream PKI, else the file root; nil without a local root.
func (src intermediateSource) localCA() issuer.CASource {
	switch {
	case src.renewing != nil:
		return src.renewing
	case src.localRoot != nil:
		return issuer.FixedCA(src.localRoot)
	}
	return nil
}

// relayed is the bundle the issuer serves to agents when it relays the
// central root's, or its local root's under an upstream PKI; nil when it
// serves its own roots (issuer.ServerConfig.Bundles).
func (src intermediateSource) relayed(loop *issuer.Intermediates) issuer.BundleSource {
	switch {
	case src.upstream != nil:
		return loop
	case src.renewing != nil:
		return src.renewing
	}
	return nil
}

// bundlePEM is what bundle.pem holds at start: meshca's own CAs of the
// first bundle, as FollowBundleFile keeps it (under an upstream PKI never
// the upstream's root), else the issuer's roots.
func (src intermediateSource) bundlePEM() []byte {
	if src.bundle != nil {
		if own := src.bundle.OwnAuthorities(); own != nil {
			return own.PEM()
		}
	}
	return src.roots.PEM()
}

// localIntermediate mints the first in-memory intermediate under the file
// root db records for every replica (standaloneRoot), or, with
// c.UpstreamPKI, under the root key db records certified by the upstream
// (connectUpstreamPKI), for the serving names c.Hosts; its LocalRoot mints
// the next ones.
func localIntermediate(ctx context.Context, c Config, db Store, log *slog.Logger) (intermediateSource, error) {
	lc := issuer.LocalRootConfig{
		TrustDomain: c.TrustDomain, Cluster: c.Cluster, ServingNames: c.Hosts,
		WorkloadDNSNames: issuer.DNSGrantNames(c.DNSGrants), TTL: c.IntermediateTTL, Logger: log,
	}
	var closeUpstream func()
	if c.UpstreamPKI != nil {
		u, renewer, closer, err := connectUpstreamPKI(ctx, c, db, log)
		if err != nil {
			return intermediateSource{}, err
		}
		lc.Root, lc.Anchor, lc.Renewer, lc.Renewed, closeUpstream = u.CA, u.Anchor, renewer, renewer.keep, closer
	} else {
		root, err := standaloneRoot(ctx, c, db)
		if err != nil {
			return intermediateSource{}, err
		}
		lc.Root = root
	}
	src, err := localSource(ctx, lc)
	if err != nil && closeUpstream != nil {
		closeUpstream()
	}
	src.close = closeUpstream
	return src, err
}

// localSource mints the first intermediate under the local root lc
// configures.
func localSource(ctx context.Context, lc issuer.LocalRootConfig) (intermediateSource, error) {
	root := lc.Root
	local, err := issuer.NewLocalRoot(lc)
	if err != nil {
		return intermediateSource{}, err
	}
	inter, tb, err := local.NewIntermediate(ctx)
	if err != nil {
		return intermediateSource{}, err
	}
	if err := rootLeavesAnHour(inter, root, time.Now()); err != nil {
		return intermediateSource{}, err
	}
	src := intermediateSource{
		authority: inter, bundle: tb, roots: tb.OwnRoots(), root: local, localRoot: root, rootExpires: root.Certificate.NotAfter,
	}
	if lc.Renewer != nil {
		src.renewing = local
	}
	return src, nil
}

// rootLeavesAnHour refuses to start with an intermediate cut short by its
// root's expiry to less than an hour from now: the issuer would stop
// issuing within the hour, and a local root is not rotated.
func rootLeavesAnHour(inter, root *ca.Authority, now time.Time) error {
	if na := inter.Certificate.NotAfter; !na.Before(root.Certificate.NotAfter) && na.Sub(now) < time.Hour {
		return errors.New("intermediate would expire within the hour: the root is about to expire")
	}
	return nil
}

// enrol obtains the first intermediate from the central root: with the
// stored credential after a restart, else with the join token. While the
// root is unreachable it retries (issuer.Upstream.FirstIntermediate); a
// refusal is final.
func enrol(ctx context.Context, c Config, log *slog.Logger) (intermediateSource, error) {
	roots, err := readPEMBundle(c.Upstream.BundleFile)
	if err != nil {
		return intermediateSource{}, fmt.Errorf("upstream.bundleFile: %w", err)
	}
	token, tokenFile, err := readJoinToken(c.Upstream.JoinTokenFile)
	if err != nil {
		return intermediateSource{}, err
	}
	up, err := issuer.NewUpstream(issuer.UpstreamConfig{
		Address: c.Upstream.Address, ServerName: c.Upstream.ServerName, Roots: roots, TrustDomain: c.TrustDomain, Cluster: c.Cluster,
		ServingNames: c.Hosts, JoinToken: token, JoinTokenFile: tokenFile, Replica: replicaName(c.Upstream.Replica, os.Hostname),
		CredentialDir: filepath.Join(c.DataDir, "credential"), Logger: log,
	})
	if err != nil {
		return intermediateSource{}, err
	}
	a, tb, err := up.FirstIntermediate(ctx)
	if err != nil {
		return intermediateSource{}, err
	}
	var rootExpires time.Time
	if own := tb.OwnAuthorities(); own != nil {
		for _, r := range own.Roots() {
			if r.NotAfter.After(rootExpires) {
				rootExpires = r.NotAfter
			}
		}
	}
	return intermediateSource{authority: a, bundle: tb, roots: tb.OwnRoots(), root: up, upstream: up, rootExpires: rootExpires}, nil
}

// readJoinToken reads the join token from path; a missing file (fine after
// the first enrolment: the credential is used) gives no token.
func readJoinToken(path string) (token, tokenFile string, err error) {
	if path == "" {
		return "", "", nil
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		return strings.TrimSpace(string(data)), path, nil
	case errors.Is(err, os.ErrNotExist):
		return "", "", nil
	default:
		return "", "", fmt.Errorf("upstream.joinTokenFile: %w", err)
	}
}

func readPEMBundle(path string) (*trust.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return trust.ParseBundle(data)
}

// replicaName is configured, or else the short host name in lower case
// (a pod's name); "" when neither is known.
func replicaName(configured string, hostname func() (string, error)) string {
	if configured != "" {
		return configured
	}
	h, err := hostname()
	if err != nil {
		return ""
	}
	h, _, _ = strings.Cut(h, ".")
	return strings.ToLower(h)
}
