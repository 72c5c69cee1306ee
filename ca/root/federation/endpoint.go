package federation

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/meshca/meshca/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Endpoint defaults.
const (
	// defaultRefreshHint is served when neither the trust bundle nor the
	// configuration says how often clients should poll.
	defaultRefreshHint = 5 * time.Minute
	// defaultShutdownTimeout bounds how long Serve waits for requests in
	// flight once its context is cancelled.
	defaultShutdownTimeout = 5 * time.Second
)

// BundleSource is where the endpoint reads the trust bundle it serves: the
// root's publisher.
type BundleSource interface {
	// Current returns the current trust bundle (nil before there is one)
	// and a channel closed once a newer one is available. It does not block.
	Current() (*trust.TrustBundle, <-chan struct{})
}

// EndpointConfig configures an Endpoint.
type EndpointConfig struct {
	// TrustDomain whose roots are served. It must be one of the bundle's own
	// (non-federated) domains: the endpoint never republishes another mesh's
	// bundle as its own. Required.
	TrustDomain spiffeid.TrustDomain
	// Source provides the trust bundle. Required.
	Source BundleSource
	// Profile selects how the endpoint authenticates itself. Required.
	Profile Profile

	// CertFile and KeyFile are a PEM certificate chain and key for
	// https_web. They are re-read on the next handshake after either file
	// changes (renamed over, rewritten, or a Kubernetes secret volume
	// update); a pair that does not load is logged and the previous one
	// kept. Mutually exclusive with GetCertificate.
	CertFile, KeyFile string
	// GetCertificate returns the serving certificate for each handshake.
	// https_web: an alternative to CertFile/KeyFile. https_spiffe:
	// required; it must return a fresh X509-SVID for SPIFFEID that chains to
	// a root of the served bundle (leaf first, root not included).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// SPIFFEID is the endpoint's SPIFFE ID for https_spiffe; clients
	// configure it as the endpoint SPIFFE ID. Certificates from
	// GetCertificate with another ID are refused. Required for
	// https_spiffe, unused for https_web.
	SPIFFEID spiffeid.ID

	// OIDCIssuer, when set, is the https URL under which the endpoint's
	// listener is reachable for OpenID Connect discovery: it then also
	// serves GET /.well-known/openid-configuration (issuer OIDCIssuer,
	// jwks_uri OIDCIssuer + "/keys") and GET /keys (the JWKS of the trust
	// domain's JWT-SVID keys), so that clouds accept the domain's
	// JWT-SVIDs. Empty means no OIDC discovery.
	OIDCIssuer string

	// RefreshHint is served when the trust bundle carries none; zero means
	// DefaultRefreshHint.
	RefreshHint time.Duration
	// ShutdownTimeout bounds the graceful shutdown of Serve; zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger receives failures to serve or to load certificates; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c EndpointConfig) Validate() error {
	files := c.CertFile != "" || c.KeyFile != ""
	switch {
	case c.TrustDomain.IsZero():
		return errors.New("federation endpoint: trust domain is required")
	case c.Source == nil:
		return errors.New("federation endpoint: bundle source is required")
	case c.RefreshHint < 0 || c.ShutdownTimeout < 0:
		return errors.New("federation endpoint: durations must not be negative")
	}
	if c.OIDCIssuer != "" {
		if err := CheckOIDCIssuer(c.OIDCIssuer); err != nil {
			return fmt.Errorf("federation endpoint: %w", err)
		}
	}
	switch c.Profile {
	case ProfileHTTPSWeb:
		switch {
		case files && c.GetCertificate != nil:
			return errors.New("federation endpoint: https_web takes either a certificate file pair or GetCertificate, not both")
		case !files && c.GetCertificate == nil:
			return errors.New("federation endpoint: https_web needs a certificate file pair or GetCertificate")
		case files && (c.CertFile == "" || c.KeyFile == ""):
			return errors.New("federation endpoint: https_web needs both a certificate file and a key file")
		}
	case ProfileHTTPSSPIFFE:
		switch {
		case c.SPIFFEID.IsZero():
			return errors.New("federation endpoint: https_spiffe needs the endpoint's SPIFFE ID")
		case c.GetCertificate == nil:
			return errors.New("federation endpoint: https_spiffe needs GetCertificate")
		case files:
			return errors.New("federation endpoint: https_spiffe serves an X509-SVID from GetCertificate, not certificate files")
		}
	default:
		return fmt.Errorf("federation endpoint: unknown profile %q", c.Profile)
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c EndpointConfig) withDefaults() EndpointConfig {
	c.RefreshHint = cmp.Or(c.RefreshHint, defaultRefreshHint)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, defaultShutdownTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Endpoint serves one trust domain's bundle at "/" over HTTPS, and with
// EndpointConfig.OIDCIssuer its OIDC discovery document and JWKS.
type Endpoint struct {
	cfg     EndpointConfig
	handler http.Handler
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// NewEndpoint checks cfg and, for https_web with files, loads the first
// certificate pair.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	e := &Endpoint{cfg: cfg}
	src := &spiffeSource{td: cfg.TrustDomain, src: cfg.Source, hint: cfg.RefreshHint}
	h, err := federation.NewHandler(cfg.TrustDomain, src, federation.WithLogger(spiffeLogger{cfg.Logger}))
	if err != nil {
		return nil, fmt.Errorf("federation endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/{$}", h)
	if cfg.OIDCIssuer != "" {
		o, err := newOIDCHandler(cfg.OIDCIssuer, cfg.TrustDomain, cfg.Source, cfg.RefreshHint)
		if err != nil {
			return nil, fmt.Errorf("federation endpoint: %w", err)
		}
		// A "GET" pattern also matches HEAD; other methods get 405.
		mux.HandleFunc("GET "+oidcConfigPath, o.serveConfig)
		mux.HandleFunc("GET "+oidcKeysPath, o.serveKeys)
	}
	e.handler = mux

	switch {
	case cfg.Profile == ProfileHTTPSSPIFFE:
		e.getCert = (&svidCheck{id: cfg.SPIFFEID, get: cfg.GetCertificate, log: cfg.Logger}).getCertificate
	case cfg.GetCertificate != nil:
		e.getCert = cfg.GetCertificate
	default:
		kp, err := newKeyPairFiles(cfg.CertFile, cfg.KeyFile, cfg.Logger)
		if err != nil {
			return nil, fmt.Errorf("federation endpoint: %w", err)
		}
		e.getCert = kp.getCertificate
	}
	return e, nil
}

// Handler returns the HTTP handler, for tests or for mounting the bundle on
// a server of the caller's own.
func (e *Endpoint) Handler() http.Handler { return e.handler }

// tlsConfig returns the server TLS configuration of the endpoint's profile.
// Clients are not asked for certificates: a bundle is public.
func (e *Endpoint) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: e.getCert}
}

// Serve serves HTTPS on lis until ctx is cancelled, then shuts down
// gracefully (at most ShutdownTimeout, after which open connections are
// closed) and returns nil. It returns an error if serving fails. Serve
// closes lis.
func (e *Endpoint) Serve(ctx context.Context, lis net.Listener) error {
	// One small GET per poll needs nothing from HTTP/2, and HTTP/1.1 lets
	// Shutdown close idle connections at once instead of waiting out the
	// HTTP/2 GOAWAY grace period.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Protocols:         &protocols,
		Handler:           e.handler,
		TLSConfig:         e.tlsConfig(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		// Failed handshakes are the client's business (or a scanner's);
		// keep them out of the default log level.
		ErrorLog: slog.NewLogLogger(e.cfg.Logger.Handler(), slog.LevelDebug),
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(lis, "", "") }()
	select {
	case err := <-done:
		_ = lis.Close()
		return fmt.Errorf("federation endpoint: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close() // deadline passed: drop what is left
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("federation endpoint: %w", err)
	}
	return nil
}

// spiffeSource turns the current trust bundle into the SPIFFE bundle of one
// trust domain for go-spiffe's handler, converting once per trust bundle.
type spiffeSource struct {
	td    spiffeid.TrustDomain
	src   BundleSource
	hint  time.Duration
	cache atomic.Pointer[convertedBundle]
}

type convertedBundle struct {
	from *trust.TrustBundle
	to   *spiffebundle.Bundle
}

var _ spiffebundle.Source = (*spiffeSource)(nil)

// GetBundleForTrustDomain implements spiffebundle.Source.
func (s *spiffeSource) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != s.td {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	tb, _ := s.src.Current()
	if tb == nil {
		return nil, errors.New("no trust bundle yet")
	}
	if c := s.cache.Load(); c != nil && c.from == tb {
		return c.to, nil
	}
	b, err := toSPIFFEBundle(tb, td, s.hint)
	if err != nil {
		return nil, err
	}
	s.cache.Store(&convertedBundle{from: tb, to: b})
	return b, nil
}

// toSPIFFEBundle returns the SPIFFE bundle of td's roots in tb as X.509
// authorities and td's JWT authorities as jwt-svid keys, with tb's
// sequence (when set) and refresh hint (or hint when tb has none). The
// root puts only JWT authorities it verified into its own domains' entries.
func toSPIFFEBundle(tb *trust.TrustBundle, td spiffeid.TrustDomain, hint time.Duration) (*spiffebundle.Bundle, error) {
	d, ok := tb.Domain(td)
	switch {
	case !ok:
		return nil, fmt.Errorf("trust bundle %d has no trust domain %q", tb.Sequence, td)
	case d.Federated:
		return nil, fmt.Errorf("trust domain %q is federated, not ours to serve", td)
	case d.Roots == nil:
		return nil, fmt.Errorf("trust domain %q has no roots", td)
	}
	b := spiffebundle.FromX509Authorities(td, d.Roots.Roots())
	for _, a := range d.JWTAuthorities {
		if err := b.AddJWTAuthority(a.KeyID, a.PublicKey); err != nil {
			return nil, fmt.Errorf("trust domain %q: %w", td, err)
		}
	}
	if tb.Sequence != 0 {
		b.SetSequenceNumber(tb.Sequence)
	}
	if tb.RefreshHint > 0 {
		hint = tb.RefreshHint
	}
	b.SetRefreshHint(hint)
	return b, nil
}

// svidCheck refuses to serve an https_spiffe certificate whose SPIFFE ID is
// not the endpoint's: clients would reject it anyway, and the log here names
// the cause. The last certificate checked is remembered: a callback that
// returns the same *tls.Certificate again is not re-parsed.
type svidCheck struct {
	id   spiffeid.ID
	get  func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	log  *slog.Logger
	last atomic.Pointer[tls.Certificate]
}

// getCertificate is the tls.Config callback. crypto/tls turns its error
// into an alert and nothing else sees it, so failures are logged here.
func (s *svidCheck) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := s.check(hello)
	if err != nil {
		s.log.Error("federation endpoint cannot present its X509-SVID", "spiffe_id", s.id.String(), "error", err.Error())
	}
	return cert, err
}

func (s *svidCheck) check(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := s.get(hello)
	if err != nil {
		return nil, fmt.Errorf("endpoint X509-SVID: %w", err)
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("endpoint X509-SVID: no certificate")
	}
	if s.last.Load() == cert {
		return cert, nil
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("endpoint X509-SVID: %w", err)
		}
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("endpoint X509-SVID: %w", err)
	}
	if id != s.id {
		return nil, fmt.Errorf("endpoint X509-SVID: SPIFFE ID %q, want %q", id, s.id)
	}
	s.last.Store(cert)
	return cert, nil
}
