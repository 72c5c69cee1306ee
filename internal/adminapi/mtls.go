package adminapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
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

	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/trust"
)

// MTLSConfig configures the admin API over mutual TLS, for operators who
// hold an admin certificate instead of a shell on the host. An admin
// certificate is an X509-SVID signed directly by one of the roots, with the
// client authentication usage (`meshca admin credential issue`): cluster
// issuers sign with intermediates, so none of them can mint one.
type MTLSConfig struct {
	// GetCertificate returns the server's certificate at each handshake
	// (a tls.Config.GetCertificate callback). Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Roots returns the roots that sign admin certificates. It is called at
	// each handshake and each call, so that the set follows root rotation.
	// Required; nil or empty roots refuse everyone.
	Roots func() *trust.Bundle
	// Admins are the SPIFFE IDs allowed to call, exactly. Required.
	Admins []spiffeid.ID
	// Revocations is the server's deny-list, asked at each handshake and
	// each call. Required.
	Revocations RevocationChecker
	// CRLs returns the CRLs carried in the trust bundle; those signed by the
	// root of an admin certificate, current and valid, are checked at each
	// handshake and each call. Nil means none.
	CRLs func() []trust.CRL
	// Now is the clock certificates and CRLs are checked against, at each
	// handshake and each call; nil means time.Now. It exists because the
	// admin listener is real TLS (no synctest bubble) and its tests move
	// the clock past certificate and CRL lifetimes; set it to the serving
	// component's clock.
	Now func() time.Time
	// Logger receives one line per refused call; nil means slog.Default().
	Logger *slog.Logger
}

// RevocationChecker is the deny-list as the admin API over mutual TLS asks
// it.
type RevocationChecker interface {
	// CheckRevoked returns an error when the certificate of serial
	// (lower-case hexadecimal) or the SPIFFE ID id is revoked, or when the
	// deny-list cannot be trusted (never loaded, or too old): the admin is
	// then refused (fail closed).
	CheckRevoked(serial string, id spiffeid.ID) error
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
	case c.Revocations == nil:
		return errors.New("admin mtls: a deny-list is required")
	}
	for _, id := range c.Admins {
		if id.IsZero() {
			return errors.New("admin mtls: empty admin SPIFFE ID")
		}
	}
	return nil
}

// MTLS serves the admin API over mutual TLS: a client must present an admin
// certificate of one of the admins, signed directly by a trusted root and
// not revoked, or the handshake fails. Its interceptors check again at each
// call (a connection may outlive the certificate, its root may leave the
// bundle, or it may be revoked meanwhile) and answer PermissionDenied;
// Actor is then "spiffe:<id>".
type MTLS struct {
	cfg       MTLSConfig
	authorize tlsconfig.Authorizer
	limits    *grpclimit.Limits
}

// adminLimits bound the admin listener apart from the server's main one, so
// that a flood of workload connections cannot lock the admins out, and few
// connections suffice: it serves operators, not workloads.
var adminLimits = grpclimit.Config{MaxConnections: 256, MaxConnectionsPerPeer: 32, MaxStreamsPerConnection: 32,
	MaxWatches: 1, MaxWatchesPerPeer: 1}

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
	if cfg.CRLs == nil {
		cfg.CRLs = func() []trust.CRL { return nil }
	}
	admins := append([]spiffeid.ID(nil), cfg.Admins...)
	cfg.Admins = admins
	lc := adminLimits
	lc.Logger = cfg.Logger
	limits, err := grpclimit.New(lc)
	if err != nil {
		return nil, fmt.Errorf("admin mtls: %w", err)
	}
	return &MTLS{cfg: cfg, authorize: tlsconfig.AuthorizeOneOf(admins...), limits: limits}, nil
}

// Listener bounds the connections lis accepts for the admin API (at most
// 256, 32 per peer address); serve on it.
func (m *MTLS) Listener(lis net.Listener) net.Listener { return m.limits.Listener(lis) }

// ServerOptions are the options of a gRPC server for the admin API over
// mutual TLS: its transport credentials, the interceptors that check every
// call, and keepalive, idle, age, stream and handshake limits.
func (m *MTLS) ServerOptions() []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.Creds(m.credentials()),
		grpc.ChainUnaryInterceptor(m.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(m.streamInterceptor()),
	}, m.limits.ServerOptions()...)
}

// TLSConfig is the server's TLS configuration: TLS 1.2 or later, a client
// certificate required and verified as an admin certificate at every
// handshake, resumed ones included.
func (m *MTLS) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
		GetCertificate: m.cfg.GetCertificate,
		// The chain is checked by VerifyConnection, as an admin certificate
		// against roots read at each handshake, rather than by crypto/tls
		// against a fixed pool.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := m.verify(cs.PeerCertificates)
			if err != nil {
				m.cfg.Logger.Warn("admin handshake refused", "reason", err.Error(), "spiffe_id", id.String())
			}
			return err
		},
		Time: m.cfg.Now,
	}
}

// credentials are the server transport credentials: TLSConfig, and the
// verified SPIFFE ID as part of the AuthInfo, for Actor.
func (m *MTLS) credentials() credentials.TransportCredentials {
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

// streamInterceptor is UnaryInterceptor for streams.
func (m *MTLS) streamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := m.check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// check verifies the peer of ctx again, against the roots, the deny-list,
// the CRLs and the time of now.
func (m *MTLS) check(ctx context.Context, method string) error {
	err := errors.New("no admin certificate on the connection")
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
			"peer", grpcx.PeerAddr(ctx))
		return status.Error(codes.PermissionDenied, "admin access requires a valid admin certificate")
	}
	return nil
}

// verify returns the SPIFFE ID of the admin certificate certs[0] when it is
// an admin's, signed directly by a trusted root, valid now for client
// authentication, and neither on the deny-list nor on its root's CRLs. The
// rest of the chain is ignored: no intermediate can vouch for an admin. On
// failure the SPIFFE ID is returned when it was read, for the log.
func (m *MTLS) verify(certs []*x509.Certificate) (spiffeid.ID, error) {
	var roots []*x509.Certificate
	b := m.cfg.Roots()
	if b != nil {
		roots = b.Roots()
	}
	if len(roots) == 0 {
		return spiffeid.ID{}, errors.New("admin mtls: no trusted roots")
	}
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("admin mtls: no client certificate")
	}
	leaf := certs[0]
	id, chains, err := x509svid.Verify(certs[:1], rootsSource(roots), x509svid.WithTime(m.cfg.Now()))
	if err != nil {
		return id, fmt.Errorf("admin mtls: not signed directly by a trusted root: %w", err)
	}
	if len(chains) != 1 || len(chains[0]) != 2 {
		return id, fmt.Errorf("admin mtls: %s: not one chain of the leaf and a root", id)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return id, fmt.Errorf("admin mtls: %s: no client authentication usage", id)
	}
	if err := m.authorize(id, chains); err != nil {
		return id, fmt.Errorf("admin mtls: %s is not an admin: %w", id, err)
	}
	serial := trust.SerialHex(leaf.SerialNumber)
	if err := m.cfg.Revocations.CheckRevoked(serial, id); err != nil {
		return id, fmt.Errorf("admin mtls: %s, serial %s: %w", id, serial, err)
	}
	if err := checkCRLs(m.cfg.CRLs(), b, chains[0][1], leaf, m.cfg.Now()); err != nil {
		return id, fmt.Errorf("admin mtls: %s, serial %s: %w", id, serial, err)
	}
	return id, nil
}

// checkCRLs returns an error when a CRL of crls signed by root, valid at
// now, lists leaf. CRLs of other issuers, and stale or invalid ones, are
// skipped: the deny-list is the authority, the CRLs carry what another
// server (the central root) revoked.
func checkCRLs(crls []trust.CRL, roots *trust.Bundle, root, leaf *x509.Certificate, now time.Time) error {
	for _, c := range crls {
		if len(c.IssuerChain) != 0 {
			continue // an intermediate's CRL: admin certificates are signed by roots
		}
		rl, issuer, err := trust.VerifyCRL(c, roots, now)
		if err != nil || !issuer.Equal(root) {
			continue
		}
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return fmt.Errorf("revoked on the root's CRL number %v", rl.Number)
			}
		}
	}
	return nil
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
