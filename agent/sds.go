package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sdsConfig configures an SDS server.
type sdsConfig struct {
	// Source provides what is served. Required.
	Source source
	// Registerer receives the SDS metrics (streams, pushes, NACKs); nil
	// means no metrics.
	Registerer prometheus.Registerer
	// Logger receives stream events and NACKs; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c sdsConfig) Validate() error {
	if c.Source == nil {
		return errors.New("sds: source is required")
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c sdsConfig) withDefaults() sdsConfig {
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// sdsServer implements Envoy's SecretDiscoveryService v3 (state of the world)
// over the agent's Source, as PROTOCOLS.md describes: each response holds
// exactly one resource per requested name; ACKs and NACKs are matched by
// nonce and answered with nothing; requests with a stale nonce are ignored;
// a new response is pushed when a subscribed secret changes.
type sdsServer struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	cfg     sdsConfig
	metrics *sdsMetrics
	stop    chan struct{}
	once    sync.Once
	nonce   atomic.Uint64
}

var _ secretv3.SecretDiscoveryServiceServer = (*sdsServer)(nil)

// newSDSServer returns a server; register it with Register.
func newSDSServer(cfg sdsConfig) (*sdsServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newSDSMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("sds: %w", err)
	}
	return &sdsServer{cfg: cfg.withDefaults(), metrics: m, stop: make(chan struct{})}, nil
}

// Register adds the service to g.
func (s *sdsServer) Register(g *grpc.Server) { secretv3.RegisterSecretDiscoveryServiceServer(g, s) }

// Shutdown ends every open stream with an OK status, so that a gRPC
// GracefulStop can complete. Streams opened afterwards end at once.
func (s *sdsServer) Shutdown() { s.once.Do(func() { close(s.stop) }) }

// DeltaSecrets is not supported: Envoy uses StreamSecrets for SDS.
func (s *sdsServer) DeltaSecrets(grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return status.Error(codes.Unimplemented, "DeltaSecrets is not supported; use StreamSecrets")
}

// FetchSecrets answers one request with the named secrets.
func (s *sdsServer) FetchSecrets(_ context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkTypeURL(req); err != nil {
		return nil, err
	}
	if len(req.GetResourceNames()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "name at least one resource")
	}
	snap, _ := s.cfg.Source.Current()
	resources, version, err := resolve(snap, req.GetResourceNames(), time.Now())
	if err != nil {
		return nil, sdsStatus(err)
	}
	s.metrics.pushed()
	return &discoveryv3.DiscoveryResponse{
		VersionInfo: version, Resources: resources, TypeUrl: secretTypeURL, Nonce: s.newNonce(),
	}, nil
}

// StreamSecrets serves one state-of-the-world stream until the client goes
// away or the server shuts down. Two goroutines share the stream's state
// under its mutex: this one pushes when the Source changes, a reader handles
// requests (and answers a new subscription at once), so an ACK costs no
// hand-over between goroutines.
func (s *sdsServer) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	s.metrics.streamOpened()
	defer s.metrics.streamClosed()
	st := &sdsStream{srv: s, send: stream.Send}
	recvErr := make(chan error, 1)
	go func() { recvErr <- st.readRequests(stream.Recv) }()
	defer st.close() // no send may follow the handler's return

	ctx := stream.Context()
	_, changed := s.cfg.Source.Current()
	for {
		select {
		case <-changed:
			var snap *snapshot
			snap, changed = s.cfg.Source.Current()
			if err := st.pushLocked(snap); err != nil {
				return err
			}
		case err := <-recvErr:
			return err
		case <-s.stop:
			st.logLocked(slog.LevelDebug, "sds stream closed: agent shutting down")
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *sdsServer) newNonce() string { return strconv.FormatUint(s.nonce.Add(1), 10) }

// sdsStream is the state of one StreamSecrets stream, shared by its handler
// and reader goroutines under mu.
type sdsStream struct {
	srv  *sdsServer
	send func(*discoveryv3.DiscoveryResponse) error

	mu sync.Mutex
	// closed is set when the handler returns; nothing is sent afterwards.
	closed bool
	// node is from the stream's first request (Envoy may send it only
	// there, with set_node_on_first_message_only).
	node *corev3.Node
	// names is the current subscription, sorted; nil before the first
	// request.
	names []string
	// sentVersion and sentNonce describe the last response sent for the
	// current subscription; "" when none was.
	sentVersion, sentNonce string
}

// readRequests handles requests until the stream ends. It returns nil when
// the client closed the stream, else the error that ends it.
func (st *sdsStream) readRequests(recv func() (*discoveryv3.DiscoveryRequest, error)) error {
	for {
		req, err := recv()
		if err != nil {
			st.logLocked(slog.LevelDebug, "sds stream closed by client", "reason", err.Error())
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		st.mu.Lock()
		err = st.receive(req)
		if err == nil {
			snap, _ := st.srv.cfg.Source.Current()
			err = st.push(snap)
		}
		st.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// pushLocked is push under the stream's mutex.
func (st *sdsStream) pushLocked(snap *snapshot) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.push(snap)
}

func (st *sdsStream) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
}

// receive processes one request: it records the node, drops stale requests,
// logs NACKs, and starts a new subscription when the names changed. The
// caller holds mu.
func (st *sdsStream) receive(req *discoveryv3.DiscoveryRequest) error {
	if st.node == nil && req.GetNode() != nil {
		st.node = req.GetNode()
	}
	if err := checkTypeURL(req); err != nil {
		return err
	}
	if nonce := req.GetResponseNonce(); nonce != "" && nonce != st.sentNonce {
		st.log(slog.LevelDebug, "sds request with a stale nonce ignored", "nonce", nonce, "current_nonce", st.sentNonce)
		return nil
	}
	if detail := req.GetErrorDetail(); detail != nil {
		st.srv.metrics.nacked()
		st.log(slog.LevelWarn, "sds response rejected (NACK)", "resources", req.GetResourceNames(),
			"rejected_version", st.sentVersion, "kept_version", req.GetVersionInfo(), "error", detail.GetMessage())
	}
	names := slices.Clone(req.GetResourceNames())
	slices.Sort(names)
	names = slices.Compact(names)
	if st.names == nil || !slices.Equal(names, st.names) {
		st.log(slog.LevelDebug, "sds subscription", "resources", names)
		st.names = names
		st.sentVersion = ""
	}
	return nil
}

// push sends the subscribed secrets if they differ from what was last sent
// on this stream. Names that cannot be served yet make it wait; an unknown
// name ends the stream with InvalidArgument. The caller holds mu.
func (st *sdsStream) push(snap *snapshot) error {
	if st.closed || len(st.names) == 0 {
		return nil
	}
	resources, version, err := resolve(snap, st.names, time.Now())
	switch {
	case errors.Is(err, errPending):
		return nil
	case errors.Is(err, errUnknownResource):
		st.log(slog.LevelWarn, "sds request for a resource this agent does not serve", "error", err.Error())
		return sdsStatus(err)
	case err != nil:
		st.log(slog.LevelError, "sds response could not be built", "error", err.Error())
		return sdsStatus(err)
	case version == st.sentVersion:
		return nil
	}
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: version, Resources: resources, TypeUrl: secretTypeURL, Nonce: st.srv.newNonce(),
	}
	if err := st.send(resp); err != nil {
		return fmt.Errorf("sds send: %w", err)
	}
	st.sentVersion, st.sentNonce = version, resp.Nonce
	st.srv.metrics.pushed()
	return nil
}

// logLocked is log under the stream's mutex.
func (st *sdsStream) logLocked(level slog.Level, msg string, attrs ...any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.log(level, msg, attrs...)
}

// log logs with the stream's node. The caller holds mu.
func (st *sdsStream) log(level slog.Level, msg string, attrs ...any) {
	if st.node != nil {
		attrs = append(attrs, "node_id", st.node.GetId(), "node_cluster", st.node.GetCluster())
	}
	st.srv.cfg.Logger.Log(context.Background(), level, msg, attrs...)
}

func checkTypeURL(req *discoveryv3.DiscoveryRequest) error {
	if t := req.GetTypeUrl(); t != "" && t != secretTypeURL {
		return status.Errorf(codes.InvalidArgument, "type_url %q is not served; want %s", t, secretTypeURL)
	}
	return nil
}

// sdsStatus maps a resolve error to a gRPC status: the one place the SDS
// server turns errors into codes.
func sdsStatus(err error) error {
	switch {
	case errors.Is(err, errUnknownResource):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errPending):
		return status.Error(codes.Unavailable, "the agent holds no valid certificate yet; retry later")
	}
	return status.Error(codes.Internal, "internal error")
}
