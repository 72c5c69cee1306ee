package issuer

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/trust"
)

// MinLocalIntermediateTTL is the shortest intermediate lifetime a LocalRoot
// mints. Certificates are backdated by 30 s, so a shorter lifetime would
// leave the rotation loop (prepare at 1/2, activate at 1/6 of the life)
// only a few seconds between steps.
const MinLocalIntermediateTTL = 30 * time.Second

// LocalRootConfig configures a LocalRoot.
type LocalRootConfig struct {
	// Root signs the intermediates: a CA whose key is held in this
	// process, self-signed, or certified by an upstream PKI (Anchor).
	// Required.
	Root *ca.Authority
	// TrustDomain and Cluster are the issuer's; each intermediate permits
	// only SPIFFE IDs in TrustDomain and names the cluster's issuer
	// (trust.IssuerServerID). Required.
	TrustDomain spiffeid.TrustDomain
	Cluster     string
	// ServingNames are the DNS names and IPs of the issuer's serving
	// certificate, which each intermediate is constrained to; empty means
	// no DNS or IP name at all.
	ServingNames []string
	// WorkloadDNSNames are the DNS names the issuer grants to workloads
	// (DNSGrantNames of its Config.DNSGrants): each intermediate admits
	// each of them exactly. Empty means none.
	WorkloadDNSNames []string
	// TTL is each intermediate's lifetime; zero means
	// ca.DefaultIntermediateTTL, otherwise at least MinLocalIntermediateTTL.
	// An intermediate never outlives Root: near its end it is cut short.
	TTL time.Duration
	// Anchor is the upstream PKI's root when an upstream issued Root's
	// certificate (Root.Chain then holds the upstream's intermediates
	// between them): the trust anchor of the bundle, Root its authority.
	// Nil means Root is self-signed.
	Anchor *x509.Certificate
	// Renewer renews Root's certificate from the upstream (see Run).
	// Required with Anchor, nil without.
	Renewer CARenewer
	// Renewed, when set, is called with each renewal Run accepts, just
	// before it becomes current (e.g. to keep it for the next start), never
	// with one it refused.
	Renewed func(UpstreamCA)
	// RenewBackoff is the first wait after a failed renewal; it doubles up
	// to an hour (rotation.CARetry). Zero means a minute.
	RenewBackoff time.Duration
	// Now is the clock renewals are decided and checked by; nil means
	// time.Now. Run looks at it at least every RenewBackoff.
	Now func() time.Time
	// Logger receives renewals and their failures; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c; it does not change c.
func (c *LocalRootConfig) Validate() error {
	switch {
	case c.Root == nil:
		return errors.New("local root: root is required")
	case c.Anchor == nil && (!c.Root.Certificate.IsCA || c.Root.Certificate.CheckSignatureFrom(c.Root.Certificate) != nil):
		return errors.New("local root: root is not a self-signed CA certificate")
	case c.Anchor != nil && c.Renewer == nil:
		return errors.New("local root: a root issued by an upstream PKI needs a renewer")
	case c.Anchor == nil && c.Renewer != nil:
		return errors.New("local root: a renewer needs the upstream's root (anchor)")
	case c.RenewBackoff < 0:
		return errors.New("local root: negative renew backoff")
	case c.TrustDomain.IsZero():
		return errors.New("local root: trust domain is required")
	case c.Cluster == "":
		return errors.New("local root: cluster is required")
	case c.TTL != 0 && c.TTL < MinLocalIntermediateTTL:
		return fmt.Errorf("local root: intermediate TTL %s is below the minimum %s", c.TTL, MinLocalIntermediateTTL)
	}
	for _, n := range c.WorkloadDNSNames {
		if !trust.ValidDNSName(n) || net.ParseIP(n) != nil {
			return fmt.Errorf("local root: workload DNS name %q is not a lower-case DNS name", n)
		}
	}
	return nil
}

// LocalRoot mints intermediates under a root held in this process (meshca
// dev, or an issuer with root.dir), for an Intermediates loop: the same
// rotation as with a central root, without the network. Its trust bundle
// is the root alone and never changes, unless an upstream PKI issued the
// root's certificate: then the bundle's root is the upstream's, the root
// is its authority, Run renews the root's certificate for the same key,
// and the bundle follows (Current).
type LocalRoot struct {
	cfg   LocalRootConfig
	state *watch.Value[localCA]
}

// localCA is the root a LocalRoot signs with and its bundle.
type localCA struct {
	root   *ca.Authority
	anchor *x509.Certificate
	bundle *trust.TrustBundle
}

var (
	_ RootClient   = (*LocalRoot)(nil)
	_ BundleSource = (*LocalRoot)(nil)
)

// NewLocalRoot returns a LocalRoot for cfg.
func NewLocalRoot(cfg LocalRootConfig) (*LocalRoot, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.TTL = cmp.Or(cfg.TTL, ca.DefaultIntermediateTTL)
	cfg.RenewBackoff = cmp.Or(cfg.RenewBackoff, time.Minute)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := newLocalCA(cfg, cfg.Root, cfg.Anchor, cfg.Now())
	if err != nil {
		return nil, err
	}
	return &LocalRoot{cfg: cfg, state: watch.New(st)}, nil
}

// newLocalCA checks root (under anchor, when set, at now) and builds its
// bundle. The sequence is the one an issuer's own bundle carries (see
// localTrustBundle), so agents see the same bundle either way. Under an
// upstream PKI it comes from the anchor, not from root: renewals, and
// replicas holding certificates of their own for the shared key, serve
// bundles of one sequence, which agents apply from any of them; the
// bundle is signed with root's key, which agents trust whichever
// certificate of it they hold (trust.TrustBundle.VerifySignature).
func newLocalCA(cfg LocalRootConfig, root *ca.Authority, anchor *x509.Certificate, now time.Time) (localCA, error) {
	if anchor == nil {
		roots, err := trust.NewBundle(root.Certificate)
		if err != nil {
			return localCA{}, fmt.Errorf("local root: %w", err)
		}
		return localCA{root: root, bundle: &trust.TrustBundle{
			Sequence:   uint64(max(root.Certificate.NotBefore.UnixMilli(), 1)),
			Domains:    []trust.DomainBundle{{TrustDomain: cfg.TrustDomain, Roots: roots}},
			ActiveRoot: trust.Fingerprint(root.Certificate),
		}}, nil
	}
	if err := verifyUnderAnchor(root, anchor, now); err != nil {
		return localCA{}, err
	}
	roots, err := trust.NewBundle(anchor)
	if err != nil {
		return localCA{}, fmt.Errorf("local root: %w", err)
	}
	own, err := trust.NewBundle(root.Certificate)
	if err != nil {
		return localCA{}, fmt.Errorf("local root: %w", err)
	}
	b := &trust.TrustBundle{
		Sequence: uint64(max(anchor.NotBefore.UnixMilli(), 1)),
		Domains: []trust.DomainBundle{{
			TrustDomain: cfg.TrustDomain, Roots: roots, Authorities: own, UpstreamChain: slices.Clone(root.Chain),
		}},
		ActiveRoot: trust.Fingerprint(root.Certificate),
	}
	if err := ca.SignTrustBundle(b, root.Signer, root.Certificate); err != nil {
		return localCA{}, fmt.Errorf("local root: %w", err)
	}
	return localCA{root: root, anchor: anchor, bundle: b}, nil
}

// verifyUnderAnchor checks that root is a CA certificate valid at now that
// chains through root.Chain to the self-signed anchor.
func verifyUnderAnchor(root *ca.Authority, anchor *x509.Certificate, now time.Time) error {
	if !anchor.IsCA || anchor.CheckSignatureFrom(anchor) != nil {
		return errors.New("local root: the upstream's root is not a self-signed CA certificate")
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor)
	for _, c := range root.Chain {
		inters.AddCert(c)
	}
	if _, err := root.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil || !root.Certificate.IsCA {
		return fmt.Errorf("local root: the CA certificate %q is not a CA under the upstream's root: %v", root.Certificate.Subject, err)
	}
	return nil
}

// Bundle returns the current trust bundle.
func (r *LocalRoot) Bundle() *trust.TrustBundle {
	st, _ := r.state.Load()
	return st.bundle
}

// Current returns the current trust bundle and a channel closed when a
// renewal replaces it: a LocalRoot under an upstream PKI is the
// BundleSource its issuer serves.
func (r *LocalRoot) Current() (*trust.TrustBundle, <-chan struct{}) {
	st, changed := r.state.Load()
	return st.bundle, changed
}

// CA returns the root the next intermediate is signed with.
func (r *LocalRoot) CA() *ca.Authority {
	st, _ := r.state.Load()
	return st.root
}

// Changed returns a channel closed when a renewal replaces the root.
func (r *LocalRoot) Changed() <-chan struct{} { return r.state.Changed() }

// NewIntermediate mints an intermediate with a new P-256 key that stays in
// memory, under the current root; its chain carries the root and the
// upstream's intermediates when an upstream issued the root. It fails
// with ca.ErrCAExpired once the root has expired.
func (r *LocalRoot) NewIntermediate(context.Context) (*ca.Authority, *trust.TrustBundle, error) {
	st, _ := r.state.Load()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("intermediate key: %w", err)
	}
	cert, err := st.root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: key.Public(), TrustDomain: r.cfg.TrustDomain, Cluster: r.cfg.Cluster,
		ServingNames: r.cfg.ServingNames, WorkloadDNSNames: r.cfg.WorkloadDNSNames, TTL: r.cfg.TTL, Now: time.Now(),
	})
	if err != nil {
		return nil, nil, err
	}
	var chain []*x509.Certificate
	if st.anchor != nil {
		chain = append([]*x509.Certificate{st.root.Certificate}, st.root.Chain...)
	}
	a, err := ca.NewAuthority(cert, key, chain...)
	if err != nil {
		return nil, nil, err
	}
	return a, st.bundle, nil
}

// WatchBundle returns when ctx is cancelled: the bundle's sequence never
// changes (a renewal under an upstream PKI keeps it; see Current).
func (r *LocalRoot) WatchBundle(ctx context.Context, _ func(*trust.TrustBundle)) error {
	<-ctx.Done()
	return nil
}
