package issuer

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
)

// ErrRejected means the root refused this issuer's join token or credential.
// Retrying will not help until an operator acts; the error text says what to
// do.
var ErrRejected = errors.New("rejected by the root")

// UpstreamConfig configures an Upstream.
type UpstreamConfig struct {
	// Address is the root's gRPC address, host:port. Required.
	Address string
	// ServerName is the name checked in the root's serving certificate;
	// empty means the host part of Address.
	ServerName string
	// Roots is the initial trust for the root's serving certificate and
	// for the signature of its trust bundles: the root CA certificates
	// printed by `meshca admin cluster add`. Required. The own roots of
	// every bundle received later are trusted as well, and remembered in
	// CredentialDir, so that a root rotation does not lock the issuer out,
	// even across restarts.
	Roots *trust.Bundle
	// TrustDomain and Cluster, when set, must be what the root enrolled this
	// issuer as; zero values accept the root's answer.
	TrustDomain spiffeid.TrustDomain
	Cluster     string
	// ServingNames are the DNS names and IP addresses this issuer serves
	// under; every intermediate request asks the root for them, and the
	// intermediate may vouch for no other (the root also leaves out its own
	// names). Nil asks for none, and the root then grants
	// trust.DefaultServingNames.
	ServingNames []string
	// JoinToken is redeemed when CredentialDir holds no usable credential.
	// Empty is fine once the issuer has enrolled.
	JoinToken string
	// JoinTokenFile is the file JoinToken was read from. Once the root has
	// accepted a one-time token, the file is removed; a failure to remove it
	// is logged. A token shared by several replicas is left in place. Empty
	// removes nothing.
	JoinTokenFile string
	// Replica names this issuer among the replicas of its cluster (a DNS
	// label, such as the pod name). It is sent at enrolment; with a join
	// token of several replicas the root gives this replica a credential of
	// its own. A one-time token ignores it.
	Replica string
	// CredentialDir holds the issuer credential (credential-key.pem, mode
	// 0600, and credential.pem) and the last known roots (roots.pem). It is
	// created with mode 0700 if missing. Required.
	CredentialDir string
	// MinBackoff and MaxBackoff bound WatchBundle's reconnection delay; zero
	// means 1 s and 1 min.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock for certificate checks, renewal decisions and TLS;
	// nil means time.Now (reconnection back-off waits on real timers). It
	// exists because the upstream talks to a real root over TLS (roottest),
	// whose clock tests move ahead: give both the same clock.
	Now func() time.Time
	// Logger receives one line per enrolment, renewal and bundle; nil means
	// slog.Default(). Keys and tokens are never logged.
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c UpstreamConfig) Validate() error {
	if c.Address == "" {
		return errors.New("upstream: root address is required")
	}
	if c.ServerName == "" {
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			return fmt.Errorf("upstream: root address %q: %w", c.Address, err)
		}
	}
	c = c.withDefaults()
	switch {
	case c.Roots == nil:
		return errors.New("upstream: root certificates to trust are required")
	case c.CredentialDir == "":
		return errors.New("upstream: credential directory is required")
	case c.MinBackoff <= 0 || c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("upstream: backoff bounds [%v, %v] are invalid", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Upstream is the issuer's client of the root CA: it enrols with a join
// token, renews intermediates with the credential it got, and watches the
// trust bundle. It is safe for concurrent use.
type Upstream struct {
	cfg   UpstreamConfig
	files credentialFiles

	// renewMu serializes the calls authenticated by the credential
	// (NewIntermediate, which replaces it, and PublishCRLs).
	renewMu sync.Mutex

	mu   sync.Mutex
	cred *credential // nil before enrolment
	// bundle is the newest bundle received, nil before the first.
	bundle *trust.TrustBundle
	// trusted verifies the root's serving certificate and the signature of
	// every bundle: cfg.Roots and the own roots of the newest bundle (or,
	// before one arrives, the roots remembered from the last run).
	trusted *trust.Bundle
}

// withDefaults returns c with its zero fields replaced by their defaults.
// c.Address must be a valid host:port when c.ServerName is empty.
func (c UpstreamConfig) withDefaults() UpstreamConfig {
	c.MinBackoff = cmp.Or(c.MinBackoff, time.Second)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, time.Minute)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(c.Address)
	}
	return c
}

// NewUpstream loads the stored credential, if any, and returns an Upstream.
// It does not contact the root. A credential that is present but unreadable
// is an error: the issuer never silently enrols again.
func NewUpstream(cfg UpstreamConfig) (*Upstream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	u := &Upstream{cfg: cfg, files: credentialFiles{dir: cfg.CredentialDir}}
	known, err := u.files.loadRoots()
	if err != nil {
		cfg.Logger.Warn("ignoring the remembered root certificates", "error", err.Error())
	}
	u.trusted = mergeRoots(cfg.Roots, known)
	cred, err := u.files.load()
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := u.checkIdentity(cred.trustDomain, cred.cluster); err != nil {
			return nil, fmt.Errorf("stored credential %s: %w", u.files.certPath(), err)
		}
		u.cred = cred
		cfg.Logger.Info("issuer credential loaded", "cluster", cred.cluster, "replica", cred.replica,
			"trust_domain", cred.trustDomain.Name(), "serial", trust.SerialHex(cred.leaf().SerialNumber), "not_after", cred.leaf().NotAfter)
		if cred.replica != "" && cred.replica != cfg.Replica {
			cfg.Logger.Warn("the stored credential is of another replica name than configured; it is kept (names change only at enrolment)",
				"stored_replica", cred.replica, "configured_replica", cfg.Replica)
		}
	}
	return u, nil
}

// TrustDomain returns the trust domain the root enrolled this issuer in;
// zero before enrolment.
func (u *Upstream) TrustDomain() spiffeid.TrustDomain {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cred == nil {
		return u.cfg.TrustDomain
	}
	return u.cred.trustDomain
}

// Cluster returns the cluster name the root enrolled this issuer as; empty
// before enrolment.
func (u *Upstream) Cluster() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cred == nil {
		return u.cfg.Cluster
	}
	return u.cred.cluster
}

// Credential returns the leaf of the credential the root issued this
// issuer (it authenticates renewals), or nil before enrolment.
func (u *Upstream) Credential() *x509.Certificate {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cred == nil {
		return nil
	}
	return u.cred.leaf()
}

// NewIntermediate obtains a new intermediate CA from the root: by Enroll
// with the join token when no usable credential is stored (storing the
// credential it gets), otherwise by Renew authenticated with the credential
// (renewing the credential too when less than half of its life remains or
// it chains to a root that no longer signs). The intermediate's key is
// generated here and lives only in the returned Authority. Everything
// received is verified, the bundle's signature included; the bundle
// returned is the one it was verified against.
func (u *Upstream) NewIntermediate(ctx context.Context) (*ca.Authority, *trust.TrustBundle, error) {
	u.renewMu.Lock()
	defer u.renewMu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate intermediate key: %w", err)
	}
	csr, err := newCSR(key, "meshca intermediate CA", u.cfg.ServingNames...)
	if err != nil {
		return nil, nil, err
	}
	u.mu.Lock()
	cred := u.cred
	u.mu.Unlock()
	now := u.cfg.Now()
	switch {
	case cred == nil && u.cfg.JoinToken == "":
		return nil, nil, fmt.Errorf("%w: no issuer credential in %s and no join token: make one with meshca admin cluster add", ErrRejected, u.cfg.CredentialDir)
	case cred == nil:
		return u.enroll(ctx, key, csr)
	case !now.Before(cred.leaf().NotAfter) && u.cfg.JoinToken == "":
		return nil, nil, fmt.Errorf("%w: the issuer credential %s expired at %s and there is no join token: make one with meshca admin cluster add",
			ErrRejected, u.files.certPath(), cred.leaf().NotAfter.UTC().Format(time.RFC3339))
	case !now.Before(cred.leaf().NotAfter):
		u.cfg.Logger.Warn("issuer credential expired; enrolling again with the join token",
			"not_after", cred.leaf().NotAfter, "cluster", cred.cluster)
		return u.enroll(ctx, key, csr)
	}
	return u.renew(ctx, cred, key, csr)
}

func (u *Upstream) enroll(ctx context.Context, key crypto.Signer, csr []byte) (*ca.Authority, *trust.TrustBundle, error) {
	credKey, credCSR, err := u.newCredentialKey()
	if err != nil {
		return nil, nil, err
	}
	var resp *meshcav1.EnrollResponse
	err = u.call(nil, func(c meshcav1.RootServiceClient) (err error) {
		resp, err = c.Enroll(ctx, &meshcav1.EnrollRequest{
			JoinToken: u.cfg.JoinToken, CredentialCsr: credCSR, IntermediateCsr: csr, Replica: u.cfg.Replica,
		})
		return err
	})
	if err != nil {
		return nil, nil, rootError("enroll", err, "join token rejected: make a new one with meshca admin cluster add")
	}
	replica := ""
	if resp.GetReplicas() > 1 {
		replica = u.cfg.Replica
	} else {
		u.removeJoinTokenFile()
	}
	td, err := spiffeid.TrustDomainFromString(resp.GetTrustDomain())
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: root answered trust domain %q: %w", resp.GetTrustDomain(), err)
	}
	if err := u.checkIdentity(td, resp.GetCluster()); err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	tb, err := trust.TrustBundleFromProto(resp.GetBundle())
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	now := u.cfg.Now()
	// The credential is kept even if the intermediate turns out bad: the
	// join token is spent, and the credential is what lets us try again.
	cred, err := verifyCredential(resp.GetCredentialChain(), credKey, tb, td, resp.GetCluster(), replica, now)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	if err := u.storeCredential(cred); err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	if err := u.verifyBundle(tb); err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	auth, err := verifyIntermediate(resp.GetIntermediateChain(), key, tb, td, resp.GetCluster(), now)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	u.acceptBundle(tb)
	u.cfg.Logger.Info("enrolled with the root", "cluster", cred.cluster, "replica", cred.replica, "trust_domain", td.Name(),
		"credential_not_after", cred.leaf().NotAfter, "intermediate_serial", trust.SerialHex(auth.Certificate.SerialNumber),
		"intermediate_not_after", auth.Certificate.NotAfter, "bundle_sequence", tb.Sequence)
	return auth, tb, nil
}

// removeJoinTokenFile removes the spent join token's file, if any: the
// token no longer opens anything, and a secret left on disk invites a
// look.
func (u *Upstream) removeJoinTokenFile() {
	path := u.cfg.JoinTokenFile
	if path == "" {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		u.cfg.Logger.Warn("cannot remove the spent join token file; remove it (or its secret) by hand", "path", path, "error", err.Error())
		return
	}
	u.cfg.Logger.Info("spent join token file removed", "path", path)
}

func (u *Upstream) renew(ctx context.Context, cred *credential, key crypto.Signer, csr []byte) (*ca.Authority, *trust.TrustBundle, error) {
	// Every renewal replaces the credential: the root accepts only the
	// newest one (and the one it replaced until the newest is used), so
	// that a copy of the credential files and this issuer cannot both
	// keep renewing.
	credKey, credCSR, err := u.newCredentialKey()
	if err != nil {
		return nil, nil, err
	}
	if why := u.credentialDue(cred); why != "" {
		u.cfg.Logger.Info("renewing the issuer credential early", "reason", why, "cluster", cred.cluster)
	}
	req := &meshcav1.RenewRequest{IntermediateCsr: csr, CredentialCsr: credCSR}
	var resp *meshcav1.RenewResponse
	err = u.call(cred.tlsCertificate(), func(c meshcav1.RootServiceClient) (err error) {
		resp, err = c.Renew(ctx, req)
		return err
	})
	if err != nil {
		return nil, nil, rootError("renew", err, fmt.Sprintf(
			"issuer credential %s rejected: if the cluster was removed, its root retired, or the credential revoked or used by another party (see the root's log), delete it and enrol again with a new join token (meshca admin cluster add)",
			u.files.certPath()))
	}
	tb, err := trust.TrustBundleFromProto(resp.GetBundle())
	if err == nil {
		err = u.verifyBundle(tb)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("renew: %w", err)
	}
	now := u.cfg.Now()
	// A credential not stored is not fatal: the root accepts the current
	// one until its successor has been used, and the next renewal asks
	// again.
	if len(resp.GetCredentialChain()) == 0 {
		u.cfg.Logger.Warn("the root did not renew the issuer credential", "cluster", cred.cluster)
	} else if next, err := verifyCredential(resp.GetCredentialChain(), credKey, tb, cred.trustDomain, cred.cluster, cred.replica, now); err != nil {
		u.cfg.Logger.Error("renewed issuer credential rejected; keeping the current one", "error", err.Error())
	} else if err := u.storeCredential(next); err != nil {
		u.cfg.Logger.Error("storing the renewed issuer credential failed; keeping the current one", "error", err.Error())
	}
	auth, err := verifyIntermediate(resp.GetIntermediateChain(), key, tb, cred.trustDomain, cred.cluster, now)
	if err != nil {
		return nil, nil, fmt.Errorf("renew: %w", err)
	}
	u.acceptBundle(tb)
	u.cfg.Logger.Info("intermediate renewed by the root", "cluster", cred.cluster,
		"serial", trust.SerialHex(auth.Certificate.SerialNumber), "not_after", auth.Certificate.NotAfter, "bundle_sequence", tb.Sequence)
	return auth, tb, nil
}

// PublishCRLs hands the root the current CRLs of this issuer's
// intermediates (RootService.PublishCRLs), authenticated by the issuer
// credential, so that the root republishes them to every cluster. It makes
// one attempt; the caller retries. It waits for a renewal in progress, so
// that it presents the credential the renewal leaves: once the root has
// seen the new credential used, the one it replaced counts as a copy.
func (u *Upstream) PublishCRLs(ctx context.Context, crls []trust.CRL) error {
	req := &meshcav1.PublishCRLsRequest{}
	for _, c := range crls {
		req.Crls = append(req.Crls, &meshcav1.CRL{Der: c.DER, IssuerChain: c.IssuerChain})
	}
	return u.publish(ctx, "publish crls", req)
}

// publish sends req to RootService.PublishCRLs with the issuer
// credential, after a renewal in progress.
func (u *Upstream) publish(ctx context.Context, op string, req *meshcav1.PublishCRLsRequest) error {
	u.renewMu.Lock()
	defer u.renewMu.Unlock()
	u.mu.Lock()
	cred := u.cred
	u.mu.Unlock()
	if cred == nil {
		return fmt.Errorf("%s: the issuer has not enrolled with the root", op)
	}
	err := u.call(cred.tlsCertificate(), func(c meshcav1.RootServiceClient) error {
		_, err := c.PublishCRLs(ctx, req)
		return err
	})
	if err != nil {
		return rootError(op, err, fmt.Sprintf("issuer credential %s rejected", u.files.certPath()))
	}
	return nil
}

// PublishJWTAuthorities hands the root this issuer's current JWT-SVID
// keys with their chains (RootService.PublishCRLs, without CRLs), so that
// the root publishes them to every cluster and keeps each until it
// expires. Like PublishCRLs it makes one attempt; the caller retries.
func (u *Upstream) PublishJWTAuthorities(ctx context.Context, as []trust.JWTAuthority) error {
	req := &meshcav1.PublishCRLsRequest{}
	for _, a := range as {
		pa, err := a.ToProto()
		if err != nil {
			return fmt.Errorf("publish JWT authorities: %w", err)
		}
		req.JwtAuthorities = append(req.JwtAuthorities, pa)
	}
	return u.publish(ctx, "publish JWT authorities", req)
}

// tlsCertificate is the credential as a TLS client certificate.
func (c *credential) tlsCertificate() *tls.Certificate {
	cert := &tls.Certificate{PrivateKey: c.key, Leaf: c.leaf()}
	for _, p := range c.chain {
		cert.Certificate = append(cert.Certificate, p.Raw)
	}
	return cert
}

// credentialDue returns why the credential should be renewed now, or "".
func (u *Upstream) credentialDue(cred *credential) string {
	leaf, now := cred.leaf(), u.cfg.Now()
	if life := leaf.NotAfter.Sub(leaf.NotBefore); leaf.NotAfter.Sub(now) < life/2 {
		return "less than half of its life remains"
	}
	u.mu.Lock()
	tb := u.bundle
	u.mu.Unlock()
	if tb == nil || tb.ActiveRoot == ([32]byte{}) {
		return ""
	}
	for _, r := range tb.OwnAuthorities().Roots() {
		if trust.Fingerprint(r) == tb.ActiveRoot && leaf.CheckSignatureFrom(r) == nil {
			return ""
		}
	}
	return "it does not chain to the active root"
}

// newCredentialKey generates a credential key and its CSR, and stores the
// key as pending, so that an unwritable directory fails before a one-time
// token is spent and a crash never leaves a certificate without its key.
func (u *Upstream) newCredentialKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate credential key: %w", err)
	}
	csr, err := newCSR(key, "meshca issuer credential")
	if err != nil {
		return nil, nil, err
	}
	if err := u.files.writePendingKey(key); err != nil {
		return nil, nil, err
	}
	return key, csr, nil
}

func (u *Upstream) storeCredential(cred *credential) error {
	if err := u.files.commit(cred); err != nil {
		return err
	}
	u.mu.Lock()
	u.cred = cred
	u.mu.Unlock()
	u.cfg.Logger.Info("issuer credential stored", "path", u.files.certPath(), "cluster", cred.cluster,
		"serial", trust.SerialHex(cred.leaf().SerialNumber), "not_after", cred.leaf().NotAfter)
	return nil
}

func (u *Upstream) checkIdentity(td spiffeid.TrustDomain, cluster string) error {
	if !u.cfg.TrustDomain.IsZero() && td != u.cfg.TrustDomain {
		return fmt.Errorf("enrolled in trust domain %q, configured for %q", td.Name(), u.cfg.TrustDomain.Name())
	}
	if u.cfg.Cluster != "" && cluster != u.cfg.Cluster {
		return fmt.Errorf("enrolled as cluster %q, configured as %q", cluster, u.cfg.Cluster)
	}
	return nil
}

// acceptBundle records tb if it is newer than the one held and reports
// whether it was. The own roots of the newest bundle are trusted for the
// root's serving certificate and remembered for the next start.
func (u *Upstream) acceptBundle(tb *trust.TrustBundle) bool {
	u.mu.Lock()
	if u.bundle != nil && tb.Sequence <= u.bundle.Sequence {
		u.mu.Unlock()
		return false
	}
	prev := u.bundle
	u.bundle = tb
	// meshca's own CAs, not the anchors: under an upstream PKI its root
	// also vouches for certificates that are not meshca's.
	own := tb.OwnAuthorities()
	u.trusted = mergeRoots(u.cfg.Roots, own)
	u.mu.Unlock()
	if own != nil && (prev == nil || prev.OwnAuthorities() == nil || !bytes.Equal(prev.OwnAuthorities().PEM(), own.PEM())) {
		if err := u.files.writeRoots(own); err != nil {
			u.cfg.Logger.Warn("remembering the root certificates failed", "error", err.Error())
		}
	}
	return true
}

func (u *Upstream) sequence() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.bundle == nil {
		return 0
	}
	return u.bundle.Sequence
}

// dial connects to the root, presenting clientCert when it is not nil. A
// connection is made per use: TLS settings (trusted roots, credential) are
// fixed at handshake and change between uses.
func (u *Upstream) dial(clientCert *tls.Certificate) (*grpc.ClientConn, error) {
	u.mu.Lock()
	pool := u.trusted.Pool()
	u.mu.Unlock()
	// The host name alone does not tell the root from a cluster's issuer
	// that serves under the same name: require the root's identity, during
	// the handshake, before a join token or a CSR is sent.
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: u.cfg.ServerName, Time: u.cfg.Now,
		VerifyConnection: trust.ServerCheck{Root: true}.VerifyConnection}
	if clientCert != nil {
		tlsConfig.Certificates = []tls.Certificate{*clientCert}
	}
	conn, err := grpc.NewClient(u.cfg.Address,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		// Within gRPC's default server enforcement (5 min), so the root
		// never answers with too_many_pings; detects a silent root.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Minute, Timeout: 20 * time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial root %s: %w", u.cfg.Address, err)
	}
	return conn, nil
}

// call runs fn on a fresh connection to the root's RootService.
func (u *Upstream) call(clientCert *tls.Certificate, fn func(meshcav1.RootServiceClient) error) error {
	conn, err := u.dial(clientCert)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(meshcav1.NewRootServiceClient(conn))
}

// rootError turns a failed root call into an error for the operator. A
// refused credential or token becomes ErrRejected with advice.
func rootError(op string, err error, advice string) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	switch st.Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s: %w: %s (root said %s: %q)", op, ErrRejected, advice, st.Code(), st.Message())
	default:
		return fmt.Errorf("%s: root %s: %w", op, st.Code(), err)
	}
}

// mergeRoots returns the union of bundles; the first must not be nil.
func mergeRoots(bundles ...*trust.Bundle) *trust.Bundle {
	var all []*x509.Certificate
	for _, b := range bundles {
		if b != nil {
			all = append(all, b.Roots()...)
		}
	}
	out, err := trust.NewBundle(all...)
	if err != nil {
		// Only bundles of CA certificates come in, and cfg.Roots is never
		// empty.
		panic(fmt.Sprintf("merge root bundles: %v", err))
	}
	return out
}

// verifyBundle checks that a root this issuer trusts for the root
// connection signed tb: the root signs every bundle it publishes, and
// agents only accept what a root they trust vouches for.
func (u *Upstream) verifyBundle(tb *trust.TrustBundle) error {
	u.mu.Lock()
	trusted := u.trusted
	u.mu.Unlock()
	if err := tb.VerifySignature(trusted, u.cfg.Now()); err != nil {
		return fmt.Errorf("trust bundle %d: %w", tb.Sequence, err)
	}
	return nil
}

// WatchBundle streams the trust bundle from the root's BundleService,
// authenticated by the issuer credential, and calls fn (from this
// goroutine) with every bundle newer than the newest one this Upstream has
// seen, from any call. A bundle not signed by a trusted root (see
// UpstreamConfig.Roots) is logged and skipped. It reconnects with
// exponential backoff and jitter whenever the stream breaks (the root ends
// every connection after a maximum age: a stream that lasted MaxBackoff
// counts as no failure), each time with the current credential and
// trusting the own roots of the newest bundle for the root's serving
// certificate. It blocks until ctx is cancelled, then returns nil.
func (u *Upstream) WatchBundle(ctx context.Context, fn func(*trust.TrustBundle)) error {
	failures := 0
	for {
		start := time.Now()
		received, err := u.watchOnce(ctx, fn)
		if ctx.Err() != nil {
			return nil
		}
		lasted := time.Since(start) >= u.cfg.MaxBackoff
		if received || lasted {
			failures = 0
		}
		failures++
		delay := rotation.Backoff(failures, mathrand.Float64(), u.cfg.MinBackoff, u.cfg.MaxBackoff)
		level := slog.LevelWarn
		if lasted {
			level = slog.LevelInfo
		}
		u.cfg.Logger.Log(ctx, level, "trust bundle watch interrupted; reconnecting", "error", err.Error(),
			"failures", failures, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// watchOnce runs one WatchBundle stream until it fails. received reports
// whether any bundle arrived, which resets the backoff.
func (u *Upstream) watchOnce(ctx context.Context, fn func(*trust.TrustBundle)) (received bool, err error) {
	u.mu.Lock()
	cred := u.cred
	u.mu.Unlock()
	if cred == nil {
		return false, errors.New("watch bundle: the issuer has not enrolled with the root")
	}
	conn, err := u.dial(cred.tlsCertificate())
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := meshcav1.NewBundleServiceClient(conn).WatchBundle(ctx, &meshcav1.WatchBundleRequest{KnownSequence: u.sequence()})
	if err != nil {
		return false, fmt.Errorf("watch bundle: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return received, fmt.Errorf("watch bundle: %w", err)
		}
		received = true
		tb, err := trust.TrustBundleFromProto(resp.GetBundle())
		if err != nil {
			return received, fmt.Errorf("watch bundle: %w", err)
		}
		if err := u.verifyBundle(tb); err != nil {
			u.cfg.Logger.Warn("ignoring a trust bundle whose signature does not verify; keeping the current one",
				"sequence", tb.Sequence, "held", u.sequence(), "error", err.Error())
			continue
		}
		if !u.acceptBundle(tb) {
			u.cfg.Logger.Debug("ignoring a trust bundle that is not newer", "sequence", tb.Sequence, "held", u.sequence())
			continue
		}
		u.cfg.Logger.Info("trust bundle received from the root", "sequence", tb.Sequence, "trust_domains", len(tb.Domains))
		fn(tb)
	}
}
