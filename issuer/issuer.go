// Package issuer is a cluster issuer: it turns an attested workload and its
// CSR into a short-lived SPIFFE certificate signed by the cluster's
// intermediate, verifies what it signed, records it, and only then returns it.
// It serves the Istio CA API over gRPC (see grpc.go). How tokens are verified
// is not its business: it calls an Attestor.
package issuer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Errors returned by Issue. The gRPC layer maps them to status codes in one
// place (grpc.go); their text is for logs and, for caller faults, for the
// caller.
var (
	// ErrUnauthenticated: the credential proves nothing. Callers see an
	// opaque message; the wrapped reason goes to the log. Attestation
	// errors are marked with it (identify).
	ErrUnauthenticated = grpcx.ErrUnauthenticated
	// ErrPermissionDenied: the caller is authenticated but may not have what
	// it asked for.
	ErrPermissionDenied = grpcx.ErrPermissionDenied
	// ErrInvalidRequest: the request is malformed (bad CSR, bad TTL).
	ErrInvalidRequest = grpcx.Mark(errors.New("invalid request"), grpcx.ErrInvalidArgument)
	// ErrUnavailable: a dependency (attestation, the store, the CA) cannot
	// serve now; retrying later may succeed. Nothing was issued.
	ErrUnavailable = grpcx.ErrUnavailable
)

// Attestor verifies a workload credential (see package attest).
type Attestor interface {
	Attest(ctx context.Context, req attest.Request) (attest.Identity, error)
}

// Recorder durably records an issued certificate with its audit event. It
// returns only after the record is committed.
type Recorder interface {
	RecordIssuance(ctx context.Context, cert store.Certificate, ev store.AuditEvent) error
}

// DenyChecker is the deny-list Issue consults before signing. *DenyList
// implements it.
type DenyChecker interface {
	// Revoked returns the revocation in force of a SPIFFE ID, if any.
	Revoked(spiffeID string) (store.Revocation, bool)
	// Stale reports whether the list is too old to be trusted at now.
	Stale(now time.Time) bool
}

// Defaults for leaf lifetimes.
const (
	DefaultTTL = time.Hour
	MinTTL     = 5 * time.Minute
	MaxTTL     = 24 * time.Hour
)

// Config configures an Issuer.
type Config struct {
	// TrustDomain of the SPIFFE IDs this issuer mints. Required.
	TrustDomain spiffeid.TrustDomain
	// Cluster is this issuer's cluster name, recorded with every certificate.
	// Required.
	Cluster string
	// Authority is the cluster's intermediate CA. Required.
	Authority *ca.Authority
	// Bundle holds the trusted roots; every issued chain must verify to one
	// of them. Required.
	Bundle *trust.Bundle
	// ExternalCA says the authorities are an operator's intermediate CA
	// rather than ones meshca minted (see PluggedCA, Istio's plug-in
	// cacerts): they need not carry meshca's URI name constraint (if they
	// have URI constraints, they must admit TrustDomain) and may outlive
	// their root, as Istio's own tools make them. False means meshca's
	// intermediates: constrained to exactly TrustDomain, within the root.
	ExternalCA bool
	// Attestor verifies bearer tokens. Required.
	Attestor Attestor
	// Recorder records every issued certificate. Required: there is no
	// "don't record" mode.
	Recorder Recorder
	// DenyList, when set, is consulted before signing: a revoked SPIFFE ID
	// gets ErrPermissionDenied, and a stale list fails every request with
	// ErrUnavailable. Nil means no revocation checks.
	DenyList DenyChecker
	// DefaultTTL applies when a request names no validity; zero means 1h.
	DefaultTTL time.Duration
	// MinTTL and MaxTTL clamp requested validities; zero means 5m and 24h.
	MinTTL, MaxTTL time.Duration
	// Now is the issuer's clock; nil means time.Now. Leaves are dated by
	// it, new intermediates verified against it and the deny-list's
	// staleness judged at it. It exists because the issuer's gRPC tests
	// serve over real TLS (outside any synctest bubble) with certificates
	// and tokens dated at fixed instants; a test that sets it gives the
	// same clock to the DenyList, the AdminServer and the store.
	Now func() time.Time
	// Logger receives one line per decision; nil means slog.Default().
	Logger *slog.Logger
	// Metrics, when set, receives the issuer's metrics (requests by code,
	// latency, attestation failures, denials); nil means no metrics.
	Metrics prometheus.Registerer
	// DNSGrants name the identities that may have DNS names in their
	// certificates, and which (see DNSGrant). Nil means none: every DNS
	// name in a CSR is refused.
	DNSGrants []DNSGrant
	// MetricsClusters are the other clusters this issuer attests (by
	// name): a request whose clusterid names one is counted under it, any
	// other under Cluster, so that callers cannot add label values.
	MetricsClusters []string
}

// Validate reports the first problem with c, as New would resolve its
// defaults. It does not change c.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.TrustDomain.IsZero():
		return errors.New("issuer: trust domain is required")
	case c.Cluster == "":
		return errors.New("issuer: cluster is required")
	case c.Authority == nil:
		return errors.New("issuer: intermediate authority is required")
	case c.Bundle == nil:
		return errors.New("issuer: trust bundle is required")
	case c.Attestor == nil:
		return errors.New("issuer: attestor is required")
	case c.Recorder == nil:
		return errors.New("issuer: recorder is required")
	case c.MinTTL <= 0 || c.MinTTL > c.MaxTTL:
		return fmt.Errorf("issuer: ttl bounds [%v, %v] are invalid", c.MinTTL, c.MaxTTL)
	case c.DefaultTTL < c.MinTTL || c.DefaultTTL > c.MaxTTL:
		return fmt.Errorf("issuer: default ttl %v is outside [%v, %v]", c.DefaultTTL, c.MinTTL, c.MaxTTL)
	}
	return ValidateDNSGrants(c.DNSGrants, c.TrustDomain)
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	c.DefaultTTL = cmp.Or(c.DefaultTTL, DefaultTTL)
	c.MinTTL = cmp.Or(c.MinTTL, MinTTL)
	c.MaxTTL = cmp.Or(c.MaxTTL, MaxTTL)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// signing is what a leaf is signed and verified with. It is immutable and
// swapped as a whole when the intermediate or the bundle changes.
type signing struct {
	authority *ca.Authority
	bundle    *trust.Bundle
	// chain is what follows the leaf in a response, roots excluded: the
	// intermediates up to the root, then the cross certificates that
	// certify that root under the bundle's other roots (see crossFor).
	chain []*x509.Certificate
	// root is the bundle root the authority chains to; it ends a response.
	root *x509.Certificate
	// tailPEM is chain, one PEM certificate per entry, then one last entry
	// holding root and the bundle's other roots (see rootsPEM), encoded
	// once for every response.
	tailPEM []string
	// previous are the authorities signed with before, newest first, that
	// had not expired when this signing replaced theirs: certificates they
	// issued may still be in use, so their CRLs are still signed.
	previous []*ca.Authority
	// prepared is the intermediate that will replace this one (see
	// SetPrepared); nil when none is prepared.
	prepared *ca.Authority
}

// Issuer issues workload certificates. It is safe for concurrent use.
type Issuer struct {
	cfg     Config
	metrics *metrics // nil without Config.Metrics
	// attestLimit bounds each caller's failed attestations.
	attestLimit *attestLimiter
	// signing is replaced by SetAuthority and SetPrepared, which wake its
	// watchers; nil before the first SetAuthority.
	signing watch.Value[*signing]
}

// current returns the signing in force.
func (iss *Issuer) current() *signing {
	s, _ := iss.signing.Load()
	return s
}

// New returns an Issuer for cfg.
func New(cfg Config) (*Issuer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Metrics, cfg.Cluster, cfg.MetricsClusters)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	iss := &Issuer{cfg: cfg, metrics: m, attestLimit: newAttestLimiter()}
	if err := iss.SetAuthority(cfg.Authority, cfg.Bundle); err != nil {
		return nil, err
	}
	return iss, nil
}

// SetAuthority switches to a new intermediate and bundle, for rotation. The
// intermediate must chain to the bundle, be constrained to the issuer's trust
// domain, and not outlive the root it chains to.
func (iss *Issuer) SetAuthority(a *ca.Authority, b *trust.Bundle) error {
	inters := x509.NewCertPool()
	for _, c := range a.Chain {
		inters.AddCert(c)
	}
	chains, err := a.Certificate.Verify(x509.VerifyOptions{
		Roots: b.Pool(), Intermediates: inters, CurrentTime: iss.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("issuer: intermediate does not chain to the trust bundle: %w", err)
	}
	chain := chains[0]
	root := chain[len(chain)-1]
	if err := iss.checkShape(a.Certificate, chain); err != nil {
		return err
	}
	iss.warnUnadmitted(a.Certificate)
	next := &signing{
		authority: a, bundle: b, root: root,
		chain: slices.Concat(chain[:len(chain)-1], iss.crossFor(a, chain, b)),
	}
	for _, c := range next.chain {
		next.tailPEM = append(next.tailPEM, certPEM(c))
	}
	next.tailPEM = append(next.tailPEM, rootsPEM(root, b))
	iss.signing.Update(func(prev *signing) (*signing, bool) {
		if prev != nil {
			next.previous = heldBefore(prev, a, iss.cfg.Now())
		}
		return next, true
	})
	return nil
}

// checkShape checks what SetAuthority requires of the intermediate cert
// whose verified chain (cert first, root last) is chain, beyond the chain:
// meshca's own intermediates are constrained to exactly the trust domain
// and end within their root; an external CA need only admit the trust
// domain.
func (iss *Issuer) checkShape(cert *x509.Certificate, chain []*x509.Certificate) error {
	td := iss.cfg.TrustDomain.Name()
	if iss.cfg.ExternalCA {
		for _, c := range chain {
			if len(c.PermittedURIDomains) > 0 && !slices.ContainsFunc(c.PermittedURIDomains, func(d string) bool { return domainMatches(td, d) }) ||
				slices.ContainsFunc(c.ExcludedURIDomains, func(d string) bool { return domainMatches(td, d) }) {
				return fmt.Errorf("issuer: %q does not permit SPIFFE IDs of trust domain %q (URI name constraints)", c.Subject, td)
			}
		}
		return nil
	}
	root := chain[len(chain)-1]
	for _, c := range chain[:len(chain)-1] {
		if c.NotAfter.After(root.NotAfter) {
			return fmt.Errorf("issuer: %q expires after its root %q", c.Subject.CommonName, root.Subject.CommonName)
		}
	}
	if len(cert.PermittedURIDomains) != 1 || cert.PermittedURIDomains[0] != td {
		return fmt.Errorf("issuer: intermediate permits URI domains %q, want exactly %q", cert.PermittedURIDomains, td)
	}
	return nil
}

// heldBefore returns the authorities of prev (its own, then its previous
// ones) other than a that are still valid at now.
func heldBefore(prev *signing, a *ca.Authority, now time.Time) []*ca.Authority {
	var out []*ca.Authority
	for _, p := range append([]*ca.Authority{prev.authority}, prev.previous...) {
		if p != a && now.Before(p.Certificate.NotAfter) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// SetPrepared records the intermediate that will replace the current one.
// It does not sign with it; it is held (see Held) so that its CRL is signed
// and distributed before any certificate under it exists: a relying party
// that checks CRLs (Envoy does, for every CA of a chain, once it has any)
// then never meets an intermediate it has no CRL for.
func (iss *Issuer) SetPrepared(a *ca.Authority) {
	iss.signing.Update(func(prev *signing) (*signing, bool) {
		if prev == nil || prev.authority == a {
			return prev, false
		}
		next := *prev
		next.prepared = a
		return &next, true
	})
}

// Held returns the authorities whose certificates may be in use at now: the
// current one first, then the prepared one (see SetPrepared), then those it
// replaced that have not expired, newest first. Each signs a CRL (see
// CRLSigner).
func (iss *Issuer) Held(now time.Time) []*ca.Authority {
	s := iss.current()
	out := []*ca.Authority{s.authority}
	if p := s.prepared; p != nil && p != s.authority && !now.Before(p.Certificate.NotBefore) && now.Before(p.Certificate.NotAfter) {
		out = append(out, p)
	}
	for _, p := range s.previous {
		if now.Before(p.Certificate.NotAfter) {
			out = append(out, p)
		}
	}
	return out
}

// authorityChanged returns a channel closed when SetAuthority next runs.
func (iss *Issuer) authorityChanged() <-chan struct{} { return iss.signing.Changed() }

// Authority returns the intermediate the issuer signs with now.
func (iss *Issuer) Authority() *ca.Authority { return iss.current().authority }

// Bundle returns the current trust bundle.
func (iss *Issuer) Bundle() *trust.Bundle { return iss.current().bundle }

// Request is one certificate request.
type Request struct {
	// Token is the bearer credential, without "Bearer ".
	Token string
	// ClusterID names the caller's cluster; empty means the local one.
	ClusterID string
	// CSR is a PEM certificate signing request.
	CSR []byte
	// TTL is the requested validity; zero means the configured default.
	TTL time.Duration
}

// Issue runs the hot path: attest → SPIFFE ID → CSR checks → sign → verify →
// record. It returns the chain leaf first, root last. On any error nothing
// was issued: a certificate that could not be recorded is discarded.
func (iss *Issuer) Issue(ctx context.Context, req Request) ([]*x509.Certificate, error) {
	leaf, s, err := iss.issue(ctx, req)
	if err != nil {
		return nil, err
	}
	chain := make([]*x509.Certificate, 0, len(s.chain)+2)
	chain = append(chain, leaf)
	chain = append(chain, s.chain...)
	return append(chain, s.root), nil
}

// issuePEM is Issue with the chain PEM-encoded, for the gRPC service: only
// the leaf is encoded per request.
func (iss *Issuer) issuePEM(ctx context.Context, req Request) (*x509.Certificate, []string, error) {
	leaf, s, err := iss.issue(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	return leaf, append([]string{certPEM(leaf)}, s.tailPEM...), nil
}

// certPEM is pem.EncodeToMemory for a certificate, in one allocation: it
// runs once per issuance.
func certPEM(c *x509.Certificate) string {
	const begin, end = "-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n"
	der := c.Raw
	n := base64.StdEncoding.EncodedLen(len(der))
	var b strings.Builder
	b.Grow(len(begin) + n + (n+63)/64 + len(end))
	b.WriteString(begin)
	var line [64]byte
	for len(der) > 0 {
		k := min(48, len(der)) // 48 bytes are one 64-character line
		base64.StdEncoding.Encode(line[:], der[:k])
		b.Write(line[:base64.StdEncoding.EncodedLen(k)])
		b.WriteByte('\n')
		der = der[k:]
	}
	b.WriteString(end)
	return b.String()
}

// issue is the hot path; it returns the leaf and the signing state that
// signed it, whose chain follows the leaf.
func (iss *Issuer) issue(ctx context.Context, req Request) (*x509.Certificate, *signing, error) {
	if req.TTL < 0 {
		return nil, nil, fmt.Errorf("%w: validity must not be negative", ErrInvalidRequest)
	}
	ident, id, err := iss.identify(ctx, req.Token, req.ClusterID)
	if err != nil {
		return nil, nil, err
	}
	csr, err := checkCSR(req.CSR, id, iss.dnsAllowed(ident.Cluster, id))
	if err != nil {
		iss.metrics.deniedNames(err)
		return nil, nil, fmt.Errorf("%s: %w", id, err)
	}
	s := iss.current()
	if err := s.checkDNSPermitted(csr.DNSNames); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", id, err)
	}
	now := iss.cfg.Now()
	leaf, err := s.authority.SignLeaf(ca.LeafRequest{
		PublicKey: csr.PublicKey, URIs: []*url.URL{id.URL()}, DNSNames: csr.DNSNames, TTL: iss.clampTTL(req.TTL), Now: now,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: sign %s: %w", ErrUnavailable, id, err)
	}
	if err := s.verify(leaf, csr.PublicKey, id, csr.DNSNames, now); err != nil {
		return nil, nil, fmt.Errorf("verify issued certificate for %s: %w", id, err)
	}
	if err := iss.record(ctx, leaf, id, ident, now); err != nil {
		return nil, nil, fmt.Errorf("%w: record %s: %w", ErrUnavailable, id, err)
	}
	// Checked again once recorded: a revocation that arrived meanwhile may
	// have been turned into a CRL before the record existed, so this
	// certificate must not leave. One that arrives later finds the record.
	if err := iss.checkRevoked(id); err != nil {
		return nil, nil, err
	}
	return leaf, s, nil
}

// identify attests a bearer token and returns the workload's identity and
// SPIFFE ID; a revoked identity is refused (ErrPermissionDenied).
func (iss *Issuer) identify(ctx context.Context, token, clusterID string) (attest.Identity, spiffeid.ID, error) {
	if !iss.attestLimit.allowed(ctx, iss.cfg.Now()) {
		err := grpcx.Mark(fmt.Errorf("attest: caller %s: %w", grpcx.PeerAddr(ctx), errAttestLimited), ErrUnauthenticated)
		iss.metrics.attestFailed(clusterID, err)
		return attest.Identity{}, spiffeid.ID{}, err
	}
	ident, err := iss.cfg.Attestor.Attest(ctx, attest.Request{Token: token, ClusterID: clusterID})
	if err != nil {
		if errors.Is(err, attest.ErrUnauthenticated) {
			iss.attestLimit.failed(ctx, iss.cfg.Now())
		}
		iss.metrics.attestFailed(clusterID, err)
		switch {
		case errors.Is(err, attest.ErrUnavailable):
			return attest.Identity{}, spiffeid.ID{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		case errors.Is(err, attest.ErrUnauthenticated):
			return attest.Identity{}, spiffeid.ID{}, fmt.Errorf("attest: %w", grpcx.Mark(err, ErrUnauthenticated))
		default: // an attestor that broke its contract still fails closed
			return attest.Identity{}, spiffeid.ID{}, fmt.Errorf("%w: attest: %w", ErrUnauthenticated, err)
		}
	}
	id, err := spiffeid.FromSegments(iss.cfg.TrustDomain, "ns", ident.Namespace, "sa", ident.ServiceAccount)
	if err != nil {
		iss.metrics.deny(DeniedPolicy)
		return attest.Identity{}, spiffeid.ID{}, fmt.Errorf("%w: identity %s/%s is not a valid SPIFFE path: %w", ErrPermissionDenied, ident.Namespace, ident.ServiceAccount, err)
	}
	if err := iss.checkRevoked(id); err != nil {
		return attest.Identity{}, spiffeid.ID{}, err
	}
	return ident, id, nil
}

// checkRevoked fails closed when the deny-list is stale and refuses a
// revoked identity.
func (iss *Issuer) checkRevoked(id spiffeid.ID) error {
	dl := iss.cfg.DenyList
	if dl == nil {
		return nil
	}
	if dl.Stale(iss.cfg.Now()) {
		return fmt.Errorf("%w: %s: the revocation deny-list is stale (store unreachable?)", ErrUnavailable, id)
	}
	if _, revoked := dl.Revoked(id.String()); revoked {
		iss.metrics.deny(DeniedRevoked)
		return fmt.Errorf("%w: %s: identity revoked", ErrPermissionDenied, id)
	}
	return nil
}

func (iss *Issuer) clampTTL(ttl time.Duration) time.Duration {
	if ttl == 0 {
		return iss.cfg.DefaultTTL
	}
	return min(max(ttl, iss.cfg.MinTTL), iss.cfg.MaxTTL)
}

func (iss *Issuer) record(ctx context.Context, leaf *x509.Certificate, id spiffeid.ID, ident attest.Identity, now time.Time) error {
	fp := sha256.Sum256(leaf.Raw)
	serial := trust.SerialHex(leaf.SerialNumber)
	cert := store.Certificate{
		Serial: serial, SPIFFEID: id.String(), Cluster: iss.cfg.Cluster,
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		Fingerprint: hex.EncodeToString(fp[:]), PodUID: ident.PodUID,
	}
	ev := store.AuditEvent{
		Time: now, Actor: "system:serviceaccount:" + ident.Namespace + ":" + ident.ServiceAccount,
		Action: "certificate.issue", Cluster: iss.cfg.Cluster, SPIFFEID: id.String(), Serial: serial,
		Detail: fmt.Sprintf("pod=%s not_after=%s", ident.PodName, leaf.NotAfter.UTC().Format(time.RFC3339)),
	}
	if len(leaf.DNSNames) > 0 {
		ev.Detail += " dns=" + strings.Join(leaf.DNSNames, ",")
	}
	return iss.cfg.Recorder.RecordIssuance(ctx, cert, ev)
}
