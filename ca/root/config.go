package root

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// Defaults applied by New to zero Config fields.
const (
	defaultRootTTL          = ca.DefaultRootTTL
	defaultIntermediateTTL  = ca.DefaultIntermediateTTL
	defaultCredentialTTL    = 30 * 24 * time.Hour
	defaultPropagationDelay = time.Hour
	defaultTick             = 10 * time.Second
	defaultServingTTL       = 24 * time.Hour
	defaultJoinTokenTTL     = time.Hour
	defaultRefreshHint      = 5 * time.Minute
	defaultMaxRequestBytes  = 64 << 10

	// maxJoinTokenTTL bounds a join token's life.
	maxJoinTokenTTL = 7 * 24 * time.Hour
	// maxReplicaJoinTokenTTL bounds a join token shared by several issuer
	// replicas: it must outlive replacements of replicas, and is replaced
	// (cluster add again, then the Secret) within this time.
	maxReplicaJoinTokenTTL = 90 * 24 * time.Hour
)

// Store is what the root service needs from storage: store.RootStore, the
// deny-list (cluster, intermediate and serial revocations), the records of
// admin certificates and the audit log. Both store backends implement it.
type Store interface {
	store.RevocationStore
	// RecordIssuance and Certificate are store.Store's: admin certificates
	// the root signs are recorded (without a cluster), and found again when
	// revoked by serial.
	RecordIssuance(ctx context.Context, cert store.Certificate, ev store.AuditEvent) error
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
	// AuditEvents is store.Store's: the admin socket's ListAuditEvents.
	AuditEvents(ctx context.Context, since time.Time) ([]store.AuditEvent, error)
	AddCluster(ctx context.Context, c store.Cluster, tok store.JoinToken, ev store.AuditEvent) error
	Cluster(ctx context.Context, name string) (store.Cluster, error)
	SetClusterDNSNames(ctx context.Context, name string, dnsNames []string, ev store.AuditEvent) error
	RedeemJoinToken(ctx context.Context, hash string, now time.Time, ev store.AuditEvent) (store.Cluster, int, error)
	RecordIntermediate(ctx context.Context, in store.Intermediate, ev store.AuditEvent) error
	Intermediates(ctx context.Context, f store.IntermediateFilter) ([]store.Intermediate, error)
	AddRoot(ctx context.Context, r store.Root, ev store.AuditEvent) error
	Roots(ctx context.Context) ([]store.Root, error)
	ClusterCredential(ctx context.Context, cluster, replica string) (store.ClusterCredential, error)
	ClusterCredentials(ctx context.Context, cluster string) ([]store.ClusterCredential, error)
	SwapClusterCredential(ctx context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error
	AppendAudit(ctx context.Context, ev store.AuditEvent) error
}

// ClusterLister is an optional capability of a Store (both backends have
// it): with it, every registered cluster's trust domain is published, even
// before the cluster enrols, and the admin Status lists every registered
// cluster. Without it the bundle names the trust domains of clusters added
// since start, of clusters with a valid intermediate, and
// Config.TrustDomains.
type ClusterLister interface {
	Clusters(ctx context.Context) ([]store.Cluster, error)
}

// ReplicaStore is an optional capability of a Store that lets several root
// servers share it. One of them at a time holds the store's leader lease
// (TryLeader, re-checked at every re-evaluation); only that one creates
// roots (the first root, automatic and administrator rotations) and signs
// root CRLs, which it stores with PutRootCRL. Every replica serves
// enrolment, renewal, bundle watches and the other admin calls, and
// publishes the stored root CRLs, so that all of them publish the same CRL
// under the same number; every replica also stores the issuer CRLs it
// accepts, and the JWT authorities, and relays those the others stored. Without this capability the root server assumes
// it is the only one on its store.
type ReplicaStore interface {
	TryLeader(ctx context.Context) (store.Lease, bool, error)
	PutRootCRL(ctx context.Context, c store.RootCRL) error
	RootCRLs(ctx context.Context) ([]store.RootCRL, error)
	// PutIssuerCRL and IssuerCRLs share the CRLs issuers publish between
	// the replicas (issuercrls.go).
	PutIssuerCRL(ctx context.Context, c store.IssuerCRL) error
	IssuerCRLs(ctx context.Context, now time.Time) ([]store.IssuerCRL, error)
	// JWTAuthorityStore shares the JWT authorities issuers publish
	// (jwtauthorities.go).
	store.JWTAuthorityStore
}

// Federated is a source of other meshes' bundles, published alongside the
// root's own trust domains.
type Federated interface {
	// Domains returns the federated bundles now; the root marks them
	// Federated. A trust domain the root has as its own is dropped.
	Domains() []trust.DomainBundle
	// Changed returns a channel that becomes ready (receives or is closed)
	// when Domains may have changed. It is called again after every
	// wake-up, so a channel closed once per change must be replaced by the
	// next call.
	Changed() <-chan struct{}
}

// Config configures the root service. Zero values are documented beside
// each field; New applies the defaults, and cmd/ calls Validate first.
type Config struct {
	// Store keeps clusters, join tokens, roots, intermediates and the audit
	// log. Required.
	Store Store
	// Keys creates and loads the root keys. Required.
	Keys Keys
	// Hosts are the DNS names and IP addresses in the TLS serving
	// certificate. Required.
	Hosts []string
	// IssuerServingNames are the DNS names (each with its subdomains) and
	// IP addresses that cluster issuers may ask their intermediates to
	// vouch for; a requested name outside them is left out, as are the
	// root's own Hosts and their parent domains. Nil means
	// trust.DefaultServingNames (the Istio and meshca Service names).
	IssuerServingNames []string
	// TrustDomains are published in the bundle even when no cluster is
	// registered in them; nil means none.
	TrustDomains []string
	// Federated supplies other meshes' bundles; nil means none.
	Federated Federated

	// Upstream, when set, issues every new root's CA certificate from an
	// upstream PKI for a key Keys creates, instead of self-signing it: the
	// upstream's root becomes the trust anchor of the bundle (its Roots),
	// meshca's CAs its Authorities. Rotation is then automatic whatever
	// AutoRotate says; a failed request leaves the active CA signing and is
	// retried with backoff (from Tick up to an hour). Nil means self-signed
	// roots. RootTTL does not apply under an upstream (upstream.Config.TTL
	// does).
	Upstream Upstream

	// Adopt, when set, names an existing self-signed root (istiod's
	// istio-ca-secret, say) that New takes over as the first root, active
	// at once, when the store holds no root yet; later roots are created
	// by rotation and cross-signed with it as with any root (adopt.go).
	// Its key is copied into Keys, which must be a KeyImporter (FileKeys);
	// no Upstream. With roots in the store, the file's certificate must be
	// one of them (nothing is done) or New fails. Nil means New creates
	// the first root.
	Adopt *AdoptRoot

	// RootCommonName is the subject CN of new roots; empty means
	// "meshca root CA". Each self-signed root's subject also carries a
	// serialNumber derived from its key (ca.NewRoot), so no two share a
	// name.
	RootCommonName string
	// RootTTL is the lifetime of a new root; zero means 10 years.
	RootTTL time.Duration
	// IntermediateTTL is the lifetime of a cluster intermediate; zero means
	// ca.DefaultIntermediateTTL (48h). It is clamped to the root's NotAfter.
	IntermediateTTL time.Duration
	// CredentialTTL is the lifetime of an issuer credential; zero means 30
	// days.
	CredentialTTL time.Duration
	// PropagationDelay is how long a new root sits in the bundle before it
	// signs; zero means 1h.
	PropagationDelay time.Duration
	// AutoRotate creates the next root when the active one has less than
	// 1/3 of its life left and no newer root exists; false means only
	// `meshca admin root rotate` rotates.
	AutoRotate bool
	// Tick is how often the roots and the bundle are re-evaluated; zero
	// means 10s.
	Tick time.Duration
	// ServingTTL is the lifetime of the TLS serving certificate; zero means
	// 24h. It is renewed at half-life and when the active root changes.
	ServingTTL time.Duration
	// JoinTokenTTL is the default life of a join token; zero means 1h.
	JoinTokenTTL time.Duration
	// RefreshHint is advertised in the bundle for pollers; zero means 5m.
	RefreshHint time.Duration
	// MaxRequestBytes bounds a gRPC request message; zero means 64 KiB.
	MaxRequestBytes int
	// Limits bound Serve's connections, streams and bundle watches (see
	// package grpclimit; zero fields mean its defaults, a nil Logger the
	// root's).
	Limits grpclimit.Config
	// CRLValidity is how long a root CRL (of revoked intermediates) is
	// valid; it is re-signed at half of it, at the re-evaluation (Tick)
	// that follows. Zero means ca.DefaultCRLValidity (24h). Keep it well
	// above Tick.
	CRLValidity time.Duration

	// Status is what the admin API's Status reports about the process the
	// root runs in; zero means nothing beyond the root's own state.
	Status StatusInfo

	// Registerer receives the root's metrics (CA expiry, enrolments,
	// renewals, signing durations, bundle sequence, leadership, root CRL
	// nextUpdate, credential reuse); nil means no metrics.
	Registerer prometheus.Registerer
	// ReadyInterval is how often Serve re-evaluates readiness (Checks) for
	// its gRPC health service; zero means ops.FollowInterval (5s).
	ReadyInterval time.Duration
	// Logger receives events; nil means slog.Default(). It never receives
	// keys or tokens.
	Logger *slog.Logger
	// Now is the root's clock; nil means time.Now. Every instant the root
	// reads comes from it: certificates and CRLs it signs, rotation and
	// expiry decisions, enrolment checks and its TLS server's handshakes
	// (its re-evaluation ticker is real time). It exists because the root
	// serves gRPC over real TLS, which a synctest bubble cannot host, and
	// its tests (and roottest's offset clock) move it by hours and days;
	// open Store on the same clock so audit rows agree.
	Now func() time.Time
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("root server: store is required")
	case c.Keys == nil:
		return errors.New("root server: keys are required")
	case len(c.Hosts) == 0:
		return errors.New("root server: at least one serving host name or IP is required")
	}
	for _, h := range c.Hosts {
		if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			return fmt.Errorf("root server: serving host %q is not a DNS name or IP address", h)
		}
	}
	if _, _, err := trust.SplitServingNames(c.IssuerServingNames); err != nil {
		return fmt.Errorf("root server: issuer serving names: %w", err)
	}
	for _, td := range c.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil {
			return fmt.Errorf("root server: trust domain %q: %w", td, err)
		}
	}
	for name, d := range map[string]time.Duration{
		"root ttl": c.RootTTL, "intermediate ttl": c.IntermediateTTL, "credential ttl": c.CredentialTTL,
		"propagation delay": c.PropagationDelay, "tick": c.Tick, "serving ttl": c.ServingTTL,
		"join token ttl": c.JoinTokenTTL, "refresh hint": c.RefreshHint, "crl validity": c.CRLValidity,
	} {
		if d < 0 {
			return fmt.Errorf("root server: negative %s %v", name, d)
		}
	}
	if c.JoinTokenTTL > maxJoinTokenTTL {
		return fmt.Errorf("root server: join token ttl %v exceeds %v", c.JoinTokenTTL, maxJoinTokenTTL)
	}
	if c.MaxRequestBytes < 0 {
		return fmt.Errorf("root server: negative max request bytes %d", c.MaxRequestBytes)
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("root server: %w", err)
	}
	return c.Adopt.validate(c)
}

func (c Config) withDefaults() Config {
	c.RootTTL = cmp.Or(c.RootTTL, defaultRootTTL)
	c.IntermediateTTL = cmp.Or(c.IntermediateTTL, defaultIntermediateTTL)
	c.CredentialTTL = cmp.Or(c.CredentialTTL, defaultCredentialTTL)
	c.PropagationDelay = cmp.Or(c.PropagationDelay, defaultPropagationDelay)
	c.Tick = cmp.Or(c.Tick, defaultTick)
	c.ServingTTL = cmp.Or(c.ServingTTL, defaultServingTTL)
	c.JoinTokenTTL = cmp.Or(c.JoinTokenTTL, defaultJoinTokenTTL)
	c.RefreshHint = cmp.Or(c.RefreshHint, defaultRefreshHint)
	c.CRLValidity = cmp.Or(c.CRLValidity, ca.DefaultCRLValidity)
	c.MaxRequestBytes = cmp.Or(c.MaxRequestBytes, defaultMaxRequestBytes)
	if c.IssuerServingNames == nil {
		c.IssuerServingNames = trust.DefaultServingNames
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	c.Limits.Logger = cmp.Or(c.Limits.Logger, c.Logger)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
