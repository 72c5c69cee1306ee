package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/ca"
)

// MTLSConfig configures the admin API over mutual TLS, for operators who
// hold an X509-SVID of an admin identity instead of a shell on the host.
type MTLSConfig struct {
	// GetCertificate returns the server's certificate at each handshake
	// (a tls.Config.GetCertificate callback). Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Roots returns the roots an admin's X509-SVID must chain to. It is
	// called at each handshake and each call, so that the set follows root
	// rotation. Required; nil or empty roots refuse everyone.
	Roots func() *ca.Bundle
	// Admins are the SPIFFE IDs allowed to call, exactly. Required.
	Admins []spiffeid.ID
	// Now is the clock certificates are checked against; nil means
	// time.Now.
	Now func() time.Time
	// Logger receives one line per refused call; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c.
func (c MTLSConfig) Validate() error {
	switch {
	case c.GetCertificate == nil:
		return errors.New("admin mtls: server certificate is required")
	case c.Roots == nil:
		return errors.New("admin mtls: trusted roots are required")
	case len(c.Admins) == 0:
		return errors.New("admin mtls: at least one admin SPIFFE ID is required")
	}
	for _, id := range c.Admins {
		if id.IsZero() {
			return errors.New("admin mtls: empty admin SPIFFE ID")
		}
	}
	return nil
}

// MTLS serves the admin API over mutual TLS: a client must present an
// X509-SVID that chains to the trusted roots and whose SPIFFE ID is one of
// the admins, or the handshake fails. Its interceptors check again at each
// call (a connection may outlive the SVID, or its root may leave the
// bundle) and answer PermissionDenied; Actor is then "spiffe:<id>".
type MTLS struct {
	cfg       MTLSConfig
	authorize tlsconfig.Authorizer
}

// NewMTLS returns the mutual TLS admin transport for cfg.
func NewMTLS(cfg MTLSConfig) (*MTLS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	admins := append([]spiffeid.ID(nil), cfg.Admins...)
	cfg.Admins = admins
	return &MTLS{cfg: cfg, authorize: tlsconfig.AuthorizeOneOf(admins...)}, nil
}

// ServerOptions are the options of a gRPC server for the admin API over
// mutual TLS: its transport credentials and the interceptors that check
// every call.
func (m *MTLS) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(m.Credentials()),
		grpc.ChainUnaryInterceptor(m.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamInterceptor()),
	}
}

// TLSConfig is the server's TLS configuration: TLS 1.2 or later, a client
// certificate required and verified as an admin X509-SVID at every
// handshake, resumed ones included.
func (m *MTLS) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
		GetCertificate: m.cfg.GetCertificate,
		// The chain is checked by VerifyConnection, as an X509-SVID against
		// roots read at each handshake, rather than by crypto/tls against a
		// fixed pool.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := m.verify(cs.PeerCertificates)
			return err
		},
		Time: m.cfg.Now,
	}
}

// Credentials are the server transport credentials: TLSConfig, and the
// verified SPIFFE ID as part of the AuthInfo, for Actor.
func (m *MTLS) Credentials() credentials.TransportCredentials {
	return svidCredentials{TransportCredentials: credentials.NewTLS(m.TLSConfig())}
}

// UnaryInterceptor refuses, with PermissionDenied, a call whose peer is not
// an admin now.
func (m *MTLS) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := m.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streams.
func (m *MTLS) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := m.check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// check verifies the peer of ctx again, against the roots and the time of
// now.
func (m *MTLS) check(ctx context.Context, method string) error {
	err := errors.New("no admin X509-SVID on the connection")
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(svidInfo); ok {
			var id spiffeid.ID
			if id, err = m.verify(info.State.PeerCertificates); err == nil && id != info.id {
				err = fmt.Errorf("SPIFFE ID %s, verified as %s at the handshake", id, info.id)
			}
		}
	}
	if err != nil {
		m.cfg.Logger.WarnContext(ctx, "admin call refused", "method", method, "reason", err.Error(),
			"peer", peerAddr(ctx))
		return status.Error(codes.PermissionDenied, "admin access requires an admin X509-SVID")
	}
	return nil
}

// verify returns the SPIFFE ID of the X509-SVID chain certs (leaf first)
// when it chains to the trusted roots now and the ID is an admin's.
func (m *MTLS) verify(certs []*x509.Certificate) (spiffeid.ID, error) {
	var roots []*x509.Certificate
	if b := m.cfg.Roots(); b != nil {
		roots = b.Roots()
	}
	if len(roots) == 0 {
		return spiffeid.ID{}, errors.New("admin mtls: no trusted roots")
	}
	id, chains, err := x509svid.Verify(certs, rootsSource(roots), x509svid.WithTime(m.cfg.Now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("admin mtls: %w", err)
	}
	if err := m.authorize(id, chains); err != nil {
		return spiffeid.ID{}, fmt.Errorf("admin mtls: %s is not an admin: %w", id, err)
	}
	return id, nil
}

// rootsSource offers the same roots for every trust domain: meshca's roots
// sign the intermediates of all its trust domains, and each intermediate's
// name constraints keep it to its own.
type rootsSource []*x509.Certificate

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (r rootsSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return x509bundle.FromX509Authorities(td, r), nil
}

// svidInfo is the AuthInfo of a mutual TLS admin connection: the TLS state
// and the SPIFFE ID verified at the handshake.
type svidInfo struct {
	credentials.TLSInfo
	id spiffeid.ID
}

// svidCredentials are TLS server credentials whose AuthInfo carries the
// peer's verified SPIFFE ID.
type svidCredentials struct {
	credentials.TransportCredentials
}

// ServerHandshake implements credentials.TransportCredentials.
func (c svidCredentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		conn.Close()
		return nil, nil, errors.New("admin mtls: no client certificate after the handshake")
	}
	// VerifyConnection has verified this chain and authorized its ID.
	id, err := x509svid.IDFromCert(tlsInfo.State.PeerCertificates[0])
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("admin mtls: %w", err)
	}
	return conn, svidInfo{TLSInfo: tlsInfo, id: id}, nil
}

// Clone implements credentials.TransportCredentials.
func (c svidCredentials) Clone() credentials.TransportCredentials {
	return svidCredentials{TransportCredentials: c.TransportCredentials.Clone()}
}
