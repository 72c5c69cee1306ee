package issuer

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strings"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/trust"
)

// ServerConfig configures the issuer's gRPC server.
type ServerConfig struct {
	// Issuer does the work. Required.
	Issuer *Issuer
	// Hosts are the DNS names and IP addresses in the serving certificate.
	// Required; istio-agent expects "istiod.istio-system.svc" when it is
	// pointed at localhost.
	Hosts []string
	// ServingTTL is the serving certificate's lifetime; zero means 24h. It is
	// renewed when half of it has passed.
	ServingTTL time.Duration
	// MaxRequestBytes bounds a request message; zero means 64 KiB. Larger
	// requests fail with ResourceExhausted before they are parsed.
	MaxRequestBytes int
	// Bundles is the trust bundle served by meshca.v1.BundleService on the
	// same port, typically the *Intermediates relaying the root's. Nil
	// means a bundle of the issuer's own trust domain and current roots.
	Bundles BundleSource
	// CRLs, when set, are the issuer's own CRLs (a *CRLSigner), added to
	// its trust domain's entry of the bundle served (see bundleService).
	// Nil serves the bundle as it is.
	CRLs CRLSource
	// JWT, when set, mints JWT-SVIDs (meshca.v1.JWTSVIDService on the
	// same port, authenticated like CreateCertificate), and its keys are
	// added to the issuer's trust domain's entry of the bundle served, as
	// CRLs are. Nil serves neither.
	JWT *JWTKeys
	// JWTAuthorities, when set with JWT, are the JWT authorities served in
	// the bundle instead of JWT's own (a *SharedJWTs: every replica's).
	JWTAuthorities JWTSource
	// Limits bound connections, streams and bundle watches (see package
	// grpclimit; zero fields mean its defaults).
	Limits grpclimit.Config
}

// Server serves the Istio CA API (istio.v1.auth.IstioCertificateService),
// JWT-SVIDs (meshca.v1.JWTSVIDService, with ServerConfig.JWT), the trust bundle (meshca.v1.BundleService) and the gRPC health service
// over TLS, within the limits of ServerConfig.Limits.
type Server struct {
	iss    *Issuer
	log    *slog.Logger
	grpc   *grpc.Server
	limits *grpclimit.Limits
	// stopping is closed when Serve begins to shut down: watch streams end
	// at once instead of holding the graceful stop for its whole timeout.
	stopping chan struct{}
	certs    *servingCerts
	health   *health.Server
}

// Health returns the server's gRPC health service, SERVING until told
// otherwise (ops.Follow keeps it in step with readiness); Serve turns it
// to NOT_SERVING before it stops.
func (s *Server) Health() *health.Server { return s.health }

// GetCertificate returns the issuer's TLS serving certificate (a
// tls.Config.GetCertificate callback), for other listeners of the issuer,
// such as the admin API over mutual TLS.
func (s *Server) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.certs.GetCertificate(hello)
}

// NewServer builds a server; call Serve to run it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Issuer == nil {
		return nil, errors.New("issuer server: issuer is required")
	}
	if len(cfg.Hosts) == 0 {
		return nil, errors.New("issuer server: at least one serving host name or IP is required")
	}
	cfg.ServingTTL = cmp.Or(cfg.ServingTTL, 24*time.Hour)
	cfg.MaxRequestBytes = cmp.Or(cfg.MaxRequestBytes, 64<<10)
	cfg.Limits.Logger = cmp.Or(cfg.Limits.Logger, cfg.Issuer.cfg.Logger)
	limits, err := grpclimit.New(cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("issuer server: %w", err)
	}
	certs, err := newServingCerts(cfg.Issuer, cfg.Hosts, cfg.ServingTTL)
	if err != nil {
		return nil, err
	}
	// A client certificate is asked for, not required: it is one way to
	// authenticate a bundle watch (see authenticateWatch), checked there.
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate, ClientAuth: tls.RequestClientCert}
	s := &Server{iss: cfg.Issuer, log: cfg.Issuer.cfg.Logger, limits: limits, stopping: make(chan struct{}), certs: certs}
	s.grpc = grpc.NewServer(append(limits.ServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes),
		// Reused goroutines keep their grown stacks: a fresh goroutine per
		// request grows its stack two or three times while parsing the CSR
		// and signing (runtime.newstack was 2-5% of issuance CPU). Workers
		// waiting for the store's group commit are busy, hence 32 per core;
		// grpc-go starts a goroutine when every worker is busy.
		grpc.NumStreamWorkers(uint32(32*runtime.GOMAXPROCS(0))),
		// Fixed flow-control windows. With grpc-go's default dynamic
		// windows the server answers nearly every request's DATA frame with
		// a connection window update and a bandwidth-estimation PING (one
		// is sent whenever none is outstanding, and on loopback or a LAN
		// its ACK is back before the next request), then reads the ACK:
		// two frames out, one in and their syscalls per certificate, to
		// size windows for bulk transfers this API never makes (a request
		// is under MaxRequestBytes, a response a few KiB). Static windows
		// of 1 MiB per connection and 64 KiB per stream send a window
		// update every 256 KiB received instead, and no PINGs.
		grpc.StaticConnWindowSize(1<<20),
		grpc.StaticStreamWindowSize(64<<10),
	)...)
	pb.RegisterIstioCertificateServiceServer(s.grpc, &istioService{srv: s})
	var bundles BundleSource = issuerBundles{iss: cfg.Issuer}
	if cfg.Bundles != nil {
		bundles = cfg.Bundles
	}
	bs := &bundleService{srv: s, src: bundles, crls: cfg.CRLs, td: cfg.Issuer.cfg.TrustDomain, log: s.log, stopping: s.stopping}
	if cfg.JWT != nil {
		bs.jwts = cfg.JWT
		if cfg.JWTAuthorities != nil {
			bs.jwts = cfg.JWTAuthorities
		}
		meshcav1.RegisterJWTSVIDServiceServer(s.grpc, &jwtService{srv: s, keys: cfg.JWT})
	}
	meshcav1.RegisterBundleServiceServer(s.grpc, bs)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	return s, nil
}

// Serve accepts connections on lis, within the connection caps, until ctx
// is cancelled, then stops gracefully: the health service turns to
// NOT_SERVING (health watchers learn it first), bundle watches end at
// once, in-flight requests get up to 5 s to finish. It returns nil on a
// clean shutdown.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	beforeStop := func() {
		s.health.Shutdown()
		close(s.stopping)
	}
	if err := grpcx.Serve(ctx, s.grpc, s.limits.Listener(lis), 5*time.Second, beforeStop); err != nil {
		return fmt.Errorf("issuer server: %w", err)
	}
	return nil
}

type istioService struct {
	pb.UnimplementedIstioCertificateServiceServer
	srv *Server
}

// CreateCertificate implements the Istio CA API: bearer token in the
// "authorization" metadata, optional "clusterid", PEM CSR, validity in
// seconds; the response is the PEM chain, leaf first and root last.
func (i *istioService) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	start := time.Now()
	resp, err := i.createCertificate(ctx, req)
	if m := i.srv.iss.metrics; m != nil {
		md, _ := metadata.FromIncomingContext(ctx)
		m.request(firstValue(md, "clusterid"), status.Code(err), time.Since(start))
	}
	return resp, err
}

func (i *istioService) createCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	token, err := bearerToken(md)
	if err == nil {
		leaf, chain, issueErr := i.srv.iss.issuePEM(ctx, Request{
			Token: token, ClusterID: firstValue(md, "clusterid"), CSR: []byte(req.GetCsr()),
			TTL: requestedTTL(req.GetValidityDuration()),
		})
		if issueErr == nil {
			i.srv.log.InfoContext(ctx, "certificate issued", "spiffe_id", leaf.URIs[0].String(),
				"serial", trust.SerialHex(leaf.SerialNumber), "not_after", leaf.NotAfter, "peer", grpcx.PeerAddr(ctx))
			return &pb.IstioCertificateResponse{CertChain: chain}, nil
		}
		err = issueErr
	}
	return nil, i.srv.status(ctx, "certificate request", err)
}

// requestedTTL converts a requested validity in seconds to a duration,
// saturating instead of overflowing: a huge request is clamped to the
// maximum TTL later, a negative one stays negative and is refused.
func requestedTTL(seconds int64) time.Duration {
	const maxSeconds = math.MaxInt64 / int64(time.Second)
	switch {
	case seconds > maxSeconds:
		return math.MaxInt64
	case seconds < -maxSeconds:
		return math.MinInt64
	}
	return time.Duration(seconds) * time.Second
}

// status maps an error of the call op to a gRPC status and logs the full
// reason ("<op> rejected"). It is the only place where issuer errors become
// status codes. Credential problems and our own failures are opaque to the
// caller.
func (s *Server) status(ctx context.Context, op string, err error) error {
	return grpcx.Mapper{Log: s.log, Event: op + " rejected", Unavailable: issuerUnavailable}.Status(ctx, "", err)
}

// errNoBundle: the issuer has no trust bundle to serve yet.
var errNoBundle = grpcx.Mark(errors.New("no trust bundle yet"), ErrUnavailable)

// issuerUnavailable is what callers read when the issuer cannot serve now.
func issuerUnavailable(err error) string {
	if errors.Is(err, errNoBundle) {
		return "no trust bundle yet; retry later"
	}
	return "certificate authority temporarily unavailable; retry later"
}

func bearerToken(md metadata.MD) (string, error) {
	v := firstValue(md, "authorization")
	if v == "" {
		return "", fmt.Errorf("%w: no authorization metadata", ErrUnauthenticated)
	}
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return "", fmt.Errorf("%w: authorization metadata is not a bearer token", ErrUnauthenticated)
	}
	return strings.TrimSpace(token), nil
}

func firstValue(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
