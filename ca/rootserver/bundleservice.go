package rootserver

import (
	"context"

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

// GetBundle implements meshcav1.BundleServiceServer.
func (s *bundleService) GetBundle(context.Context, *meshcav1.GetBundleRequest) (*meshcav1.GetBundleResponse, error) {
	b, _ := s.r.Current()
	return &meshcav1.GetBundleResponse{Bundle: b.ToProto()}, nil
}

// WatchBundle implements meshcav1.BundleServiceServer: the current bundle
// at once unless the caller holds it, then every newer one.
func (s *bundleService) WatchBundle(req *meshcav1.WatchBundleRequest, stream grpc.ServerStreamingServer[meshcav1.WatchBundleResponse]) error {
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
