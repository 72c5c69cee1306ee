package root

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/trust"
)

// gracePeriod bounds how long a stopping server waits for in-flight calls.
const gracePeriod = 5 * time.Second

// Serve serves RootService, BundleService and gRPC health over TLS on lis,
// within Config.Limits, until ctx ends, then stops gracefully and returns
// nil. The serving certificate is signed directly by the active root;
// client certificates (issuer credentials) are optional at the TLS layer
// and required by Renew, PublishCRLs and WatchBundle.
func (r *Root) Serve(ctx context.Context, lis net.Listener) error {
	certs, err := newServingCerts(r)
	if err != nil {
		return err
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	tlsConfig.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		// Rebuilt per handshake: the anchors follow root rotation.
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"h2"},
			GetCertificate: certs.GetCertificate,
			ClientAuth:     tls.VerifyClientCertIfGiven,
			ClientCAs:      r.state.Load().clientCAs,
			Time:           r.cfg.Now,
		}, nil
	}
	stopping := make(chan struct{})
	srv := grpc.NewServer(append(r.limits.ServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.MaxRecvMsgSize(r.cfg.MaxRequestBytes),
	)...)
	meshcav1.RegisterRootServiceServer(srv, &rootService{r: r})
	meshcav1.RegisterBundleServiceServer(srv, &bundleService{r: r, stopping: stopping})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		ops.Follow(ctx, hs, r.Checks(), r.cfg.ReadyInterval, r.log)
	}()
	defer func() { <-followed }()
	// Draining: health says NOT_SERVING before the graceful stop, so that
	// load balancers stop sending new calls while in-flight ones finish.
	return serve(ctx, srv, r.limits.Listener(lis), stopping, hs.Shutdown)
}

// ServeAdmin serves AdminService without TLS on lis, which should be a
// Unix socket only its owner can reach (see adminapi.ListenUnix), until ctx ends.
// The audit actor of each call is the peer's Unix user.
func (r *Root) ServeAdmin(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer(
		grpc.Creds(adminapi.UnixCredentials()),
		grpc.MaxRecvMsgSize(r.cfg.MaxRequestBytes),
	)
	meshcav1.RegisterAdminServiceServer(srv, newAdminService(r))
	return serve(ctx, srv, lis, make(chan struct{}), nil)
}

// serveAdminMTLS serves AdminService over mutual TLS on lis, to the admins
// m lets in (see adminapi.NewMTLS; build it with ServingCertificate, OwnRoots,
// the Root itself as the deny-list and RootCRLs), until ctx ends. The audit
// actor is the admin's SPIFFE ID.
func (r *Root) serveAdminMTLS(ctx context.Context, lis net.Listener, m *adminapi.MTLS) error {
	srv := grpc.NewServer(append(m.ServerOptions(), grpc.MaxRecvMsgSize(r.cfg.MaxRequestBytes))...)
	meshcav1.RegisterAdminServiceServer(srv, newAdminService(r))
	return serve(ctx, srv, m.Listener(lis), make(chan struct{}), nil)
}

// ServingCertificate returns a tls.Config.GetCertificate callback with a
// certificate for Config.Hosts signed by the active root, like the one
// Serve presents, for other listeners such as the admin API over mTLS.
func (r *Root) ServingCertificate() (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	certs, err := newServingCerts(r)
	if err != nil {
		return nil, err
	}
	return certs.GetCertificate, nil
}

// OwnRoots returns the roots of the published bundle (its own trust
// domains), nil when there are none yet.
func (r *Root) OwnRoots() *trust.Bundle {
	b, _ := r.Current()
	if b == nil {
		return nil
	}
	return b.OwnRoots()
}

// OwnAuthorities returns meshca's own CAs of the published bundle
// (trust.TrustBundle.OwnAuthorities: the roots, or under an upstream PKI
// the CAs it issued meshca), nil when there are none yet. Admin
// certificates must be signed directly by one of them.
func (r *Root) OwnAuthorities() *trust.Bundle {
	b, _ := r.Current()
	if b == nil {
		return nil
	}
	return b.OwnAuthorities()
}

// serve serves srv on lis until ctx ends. Before the graceful stop it
// calls drain, when not nil, and closes stopping.
func serve(ctx context.Context, srv *grpc.Server, lis net.Listener, stopping chan struct{}, drain func()) error {
	before := func() {
		if drain != nil {
			drain()
		}
		close(stopping)
	}
	if err := grpcx.Serve(ctx, srv, lis, gracePeriod, before); err != nil {
		close(stopping)
		return fmt.Errorf("root server: %w", err)
	}
	return nil
}

// servingCerts is the TLS certificate of the network server: signed
// directly by the active root, key in memory only, renewed at half-life and
// when the active root changes. The chain carries the root too, so that a
// new issuer can check it against the root fingerprints it was given.
type servingCerts struct {
	r   *Root
	key crypto.Signer
	// uri, when set, makes the certificate an X509-SVID for it (the SPIFFE
	// bundle endpoint's) instead of a certificate for Config.Hosts.
	uri *url.URL

	mu      sync.Mutex
	current *tls.Certificate
	rootFP  [32]byte
	renewAt time.Time
}

func newServingCerts(r *Root) (*servingCerts, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	s := &servingCerts{r: r, key: key}
	if _, err := s.get(); err != nil {
		// Handshakes fail until the active root's key is back (it is
		// retried every tick); the server recovers without a restart.
		r.log.Error("no serving certificate yet", "error", err)
	}
	return s, nil
}

// svidCertificate returns a tls.Config.GetCertificate callback that presents
// an X509-SVID for id, signed directly by the active root, key in memory
// only, renewed like the serving certificate. The SPIFFE bundle endpoint
// (profile https_spiffe) serves with it.
func (r *Root) svidCertificate(id spiffeid.ID) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("svid key: %w", err)
	}
	s := &servingCerts{r: r, key: key, uri: id.URL()}
	if _, err := s.get(); err != nil {
		r.log.Error("no bundle endpoint certificate yet", "spiffe_id", id.String(), "error", err)
	}
	return s.GetCertificate, nil
}

// GetCertificate is a tls.Config.GetCertificate callback.
func (s *servingCerts) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.get() }

func (s *servingCerts) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.r.cfg.Now()
	st := s.r.state.Load()
	if s.current != nil && now.Before(s.renewAt) && s.rootFP == st.activeFP {
		return s.current, nil
	}
	cert, err := s.sign(st, now)
	if err != nil {
		if s.current != nil && now.Before(s.current.Leaf.NotAfter) {
			s.r.log.Warn("cannot renew the serving certificate; keeping the current one", "error", err,
				"not_after", s.current.Leaf.NotAfter)
			return s.current, nil
		}
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	s.current, s.rootFP = cert, st.activeFP
	s.renewAt = cert.Leaf.NotBefore.Add(cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore) / 2)
	return cert, nil
}

func (s *servingCerts) sign(st *state, now time.Time) (*tls.Certificate, error) {
	if st.active == nil {
		return nil, errNoActiveRoot
	}
	req := ca.LeafRequest{
		PublicKey: s.key.Public(), TTL: s.r.cfg.ServingTTL, Now: now,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	// The URI names the root to meshca's clients (trust.ServerCheck), which
	// no cluster intermediate can vouch for.
	hosts := s.r.cfg.Hosts
	req.URIs = []*url.URL{trust.RootServerURI}
	if s.uri != nil {
		hosts, req.URIs = nil, []*url.URL{s.uri}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			req.IPAddresses = append(req.IPAddresses, ip)
		} else {
			req.DNSNames = append(req.DNSNames, h)
		}
	}
	leaf, err := st.active.SignLeaf(req)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(st.active.Certificate)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: req.ExtKeyUsage}); err != nil {
		return nil, fmt.Errorf("%w: serving certificate: %w", errSelfCheck, err)
	}
	return &tls.Certificate{
		Certificate: append([][]byte{leaf.Raw, st.active.Certificate.Raw}, rawChain(st.active.Chain)...),
		PrivateKey:  s.key,
		Leaf:        leaf,
	}, nil
}
