package agent

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/grpcx"
)

// workloadHeader is the metadata every Workload API request must carry with
// the value "true" (SPIFFE Workload API spec; PROTOCOLS.md).
const workloadHeader = "workload.spiffe.io"

// workloadConfig configures a Workload API server.
type workloadConfig struct {
	// Source provides what is served. Required.
	Source source
	// Minter obtains JWT-SVIDs from the issuer; nil means FetchJWTSVID is
	// Unimplemented (JWT bundles are still served and validated against).
	Minter jwtMinter
	// Logger receives stream events; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c workloadConfig) Validate() error {
	if c.Source == nil {
		return errors.New("workload api: source is required")
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c workloadConfig) withDefaults() workloadConfig {
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// workloadServer implements the SPIFFE Workload API over the agent's
// Source: X.509 (FetchX509SVID, FetchX509Bundles) and JWT (FetchJWTSVID,
// FetchJWTBundles, ValidateJWTSVID; workload_jwt.go). Every caller of the
// socket gets the agent's one identity: access is controlled by the
// socket's file mode, not by workload attestation.
type workloadServer struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	cfg  workloadConfig
	errs grpcx.Mapper
	jwts jwtCache
	// mints merges concurrent mints of one audience set; minting counts
	// the distinct mints in flight (maxConcurrentMints).
	mints   singleflight.Group
	minting atomic.Int32
	stop    chan struct{}
	once    sync.Once
}

var _ workload.SpiffeWorkloadAPIServer = (*workloadServer)(nil)

// newWorkloadServer returns a server; NewGRPCServer and Register wire it.
func newWorkloadServer(cfg workloadConfig) (*workloadServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &workloadServer{cfg: cfg, errs: grpcx.Mapper{Log: cfg.Logger, Event: "workload api request failed"}, stop: make(chan struct{})}, nil
}

// ServerOptions are the gRPC server options the Workload API needs: the
// security-header check on every method.
func (w *workloadServer) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkWorkloadHeader(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkWorkloadHeader(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

// Register adds the service to g, which must have been built with
// ServerOptions.
func (w *workloadServer) Register(g *grpc.Server) { workload.RegisterSpiffeWorkloadAPIServer(g, w) }

// Shutdown ends every open stream with an OK status, so that a gRPC
// GracefulStop can complete. Streams opened afterwards end at once.
func (w *workloadServer) Shutdown() { w.once.Do(func() { close(w.stop) }) }

func checkWorkloadHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(workloadHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// FetchX509SVID streams the agent's X.509-SVID with its trust domain's
// bundle, the other trust domains' bundles (federated_bundles) and the
// verified CRLs of every trust domain (crl, DER): once it holds a valid
// one, and again after every change of certificate, bundles or CRLs. It never sends an empty list: until a valid certificate exists
// the stream just waits.
func (w *workloadServer) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	return w.watch(stream.Context(), func(snap *snapshot) (string, func() error) {
		if !snap.Valid(time.Now()) {
			return "", nil
		}
		return snap.SVIDVersion() + "," + snap.BundleVersion() + "," + snap.FederatedVersion() + "," + snap.CRLVersion(), func() error {
			return stream.Send(&workload.X509SVIDResponse{
				Svids: []*workload.X509SVID{{
					SpiffeId:    snap.ID().String(),
					X509Svid:    snap.chainDER,
					X509SvidKey: snap.keyDER,
					Bundle:      snap.bundleDER,
				}},
				FederatedBundles: snap.federated,
				Crl:              snap.crls,
			})
		}
	})
}

// FetchX509Bundles streams the trust bundles of the own and the other
// trust domains, keyed by trust domain ID (spiffe://td), with the verified
// CRLs of every trust domain (crl, DER), and again after every change. It waits until the agent knows its trust domain (from its
// first certificate).
func (w *workloadServer) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return w.watch(stream.Context(), func(snap *snapshot) (string, func() error) {
		if snap.SVID() == nil || snap.Bundle() == nil {
			return "", nil
		}
		return snap.BundleVersion() + "," + snap.FederatedVersion() + "," + snap.CRLVersion(), func() error {
			bundles := make(map[string][]byte, len(snap.federated)+1)
			maps.Copy(bundles, snap.federated)
			bundles[snap.ID().TrustDomain().IDString()] = snap.bundleDER
			return stream.Send(&workload.X509BundlesResponse{Bundles: bundles, Crl: snap.crls})
		}
	})
}

// watch runs a server stream: for each snapshot, next returns the version
// the stream should hold and how to send it ("" and nil when there is
// nothing to send yet); watch sends whenever the version changes, until the
// client leaves or the server shuts down.
func (w *workloadServer) watch(ctx context.Context, next func(*snapshot) (string, func() error)) error {
	var sent string
	for {
		snap, changed := w.cfg.Source.Current()
		if version, send := next(snap); send != nil && version != sent {
			if err := send(); err != nil {
				return err
			}
			sent = version
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-w.stop:
			return nil
		}
	}
}
