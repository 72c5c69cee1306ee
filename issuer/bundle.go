package issuer

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
)

// BundleSource supplies the trust bundle an issuer publishes to its agents.
// *Intermediates implements it with the bundle relayed from the root.
type BundleSource interface {
	// Current returns the newest bundle, nil when there is none yet, and a
	// channel that is closed once a newer one replaces it.
	Current() (*ca.TrustBundle, <-chan struct{})
}

// issuerBundles is the BundleSource of an issuer without a root to relay
// from: one trust domain, the issuer's, with the issuer's current roots.
type issuerBundles struct{ iss *Issuer }

var _ BundleSource = issuerBundles{}

func (s issuerBundles) Current() (*ca.TrustBundle, <-chan struct{}) {
	sig := s.iss.signing.Load()
	return localTrustBundle(s.iss, sig), sig.replaced
}

// localTrustBundle builds the bundle of a signing. Its sequence is derived
// from its content, so that it is the same across restarts and replicas:
// the newest root's NotBefore in Unix milliseconds. It grows when a newer
// root joins; the sequences of a root service (publication time in Unix
// milliseconds) stay above it, so moving an issuer under a root service
// never looks like going back.
func localTrustBundle(iss *Issuer, sig *signing) *ca.TrustBundle {
	var newest int64
	for _, r := range sig.bundle.Roots() {
		newest = max(newest, r.NotBefore.UnixMilli())
	}
	return &ca.TrustBundle{
		Sequence:   uint64(max(newest, 1)),
		Domains:    []ca.DomainBundle{{TrustDomain: iss.cfg.TrustDomain, Roots: sig.bundle}},
		ActiveRoot: ca.Fingerprint(sig.root),
	}
}

// bundleService serves meshca.v1.BundleService to agents. Bundles are
// public: callers authenticate the server (TLS) but need no identity.
type bundleService struct {
	meshcav1.UnimplementedBundleServiceServer
	src BundleSource
	log *slog.Logger
	// stopping ends every watch when the server shuts down.
	stopping <-chan struct{}
}

func (b *bundleService) GetBundle(ctx context.Context, _ *meshcav1.GetBundleRequest) (*meshcav1.GetBundleResponse, error) {
	tb, _ := b.src.Current()
	if tb == nil {
		return nil, status.Error(codes.Unavailable, "no trust bundle yet; retry later")
	}
	return &meshcav1.GetBundleResponse{Bundle: tb.ToProto()}, nil
}

// WatchBundle sends the current bundle at once, unless the caller already
// holds its sequence, then every newer one, until the caller goes away.
func (b *bundleService) WatchBundle(req *meshcav1.WatchBundleRequest, stream grpc.ServerStreamingServer[meshcav1.WatchBundleResponse]) error {
	ctx := stream.Context()
	last, sent := req.GetKnownSequence(), false
	for {
		tb, changed := b.src.Current()
		if tb != nil && (tb.Sequence > last || (!sent && tb.Sequence != last)) {
			if err := stream.Send(&meshcav1.WatchBundleResponse{Bundle: tb.ToProto()}); err != nil {
				if !errors.Is(err, context.Canceled) && ctx.Err() == nil {
					b.log.InfoContext(ctx, "bundle watch ended", "error", err.Error(), "peer", peerAddr(ctx))
				}
				return err
			}
			last, sent = tb.Sequence, true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-b.stopping:
			return status.Error(codes.Unavailable, "issuer shutting down")
		}
	}
}
