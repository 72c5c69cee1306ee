package root

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

type bundleService struct {
	meshcav1.UnimplementedBundleServiceServer
	r *Root
	// stopping is closed when the server shuts down, so that watch streams
	// end and a graceful stop does not wait for them.
	stopping <-chan struct{}
}

// GetBundle implements meshcav1.BundleServiceServer. It is public: the
// bundle is what the federation endpoint publishes anyway, and one cheap
// answer is bounded by the connection and stream caps.
func (s *bundleService) GetBundle(context.Context, *meshcav1.GetBundleRequest) (*meshcav1.GetBundleResponse, error) {
	b, _ := s.r.Current()
	return &meshcav1.GetBundleResponse{Bundle: b.ToProto()}, nil
}

// WatchBundle implements meshcav1.BundleServiceServer: the current bundle
// at once unless the caller holds it, then every newer one. A watch holds
// a stream until the caller leaves, so it is for issuers only: it takes an
// issuer credential of a cluster that is not revoked (as Renew does) and a
// watch slot (Config.Limits), given back when the stream ends.
func (s *bundleService) WatchBundle(req *meshcav1.WatchBundleRequest, stream grpc.ServerStreamingServer[meshcav1.WatchBundleResponse]) error {
	ctx := stream.Context()
	st := s.r.state.Load()
	caller, err := s.r.authenticate(ctx, st, watchCredential)
	c := caller.cluster
	if err == nil && st.revoked[c.Name] {
		err = revokedError(c.Name)
	}
	if err != nil {
		return statusOf(ctx, s.r.log, "WatchBundle", err)
	}
	release, err := s.r.limits.AcquireWatch(ctx)
	if err != nil {
		return statusOf(ctx, s.r.log, "WatchBundle", fmt.Errorf("cluster %s: %w", c.Name, err))
	}
	defer release()
	known := req.GetKnownSequence()
	for {
		b, changed := s.r.Current()
		if b.Sequence != known {
			if err := stream.Send(&meshcav1.WatchBundleResponse{Bundle: b.ToProto()}); err != nil {
				return err
			}
			known = b.Sequence
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "root CA shutting down; reconnect")
		}
	}
}
