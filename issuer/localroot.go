package issuer

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// MinLocalIntermediateTTL is the shortest intermediate lifetime a LocalRoot
// mints. Certificates are backdated by 30 s, so a shorter lifetime would
// leave the rotation loop (prepare at 1/2, activate at 1/6 of the life)
// only a few seconds between steps.
const MinLocalIntermediateTTL = 30 * time.Second

// LocalRootConfig configures a LocalRoot.
type LocalRootConfig struct {
	// Root signs the intermediates: a self-signed root whose key is held
	// in this process. Required.
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
}

// Validate reports the first problem with c; it does not change c.
func (c *LocalRootConfig) Validate() error {
	switch {
	case c.Root == nil:
		return errors.New("local root: root is required")
	case !c.Root.Certificate.IsCA || c.Root.Certificate.CheckSignatureFrom(c.Root.Certificate) != nil:
		return errors.New("local root: root is not a self-signed CA certificate")
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
// is the root alone and never changes.
type LocalRoot struct {
	cfg    LocalRootConfig
	bundle *trust.TrustBundle
}

var _ RootClient = (*LocalRoot)(nil)

// NewLocalRoot returns a LocalRoot for cfg.
func NewLocalRoot(cfg LocalRootConfig) (*LocalRoot, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.TTL = cmp.Or(cfg.TTL, ca.DefaultIntermediateTTL)
	roots, err := trust.NewBundle(cfg.Root.Certificate)
	if err != nil {
		return nil, fmt.Errorf("local root: %w", err)
	}
	// The sequence is the one an issuer's own bundle carries (see
	// localTrustBundle), so agents see the same bundle either way.
	return &LocalRoot{cfg: cfg, bundle: &trust.TrustBundle{
		Sequence:   uint64(max(cfg.Root.Certificate.NotBefore.UnixMilli(), 1)),
		Domains:    []trust.DomainBundle{{TrustDomain: cfg.TrustDomain, Roots: roots}},
		ActiveRoot: trust.Fingerprint(cfg.Root.Certificate),
	}}, nil
}

// Bundle returns the trust bundle: the root alone.
func (r *LocalRoot) Bundle() *trust.TrustBundle { return r.bundle }

// NewIntermediate mints an intermediate with a new P-256 key that stays in
// memory. It fails with ca.ErrCAExpired once the root has expired.
func (r *LocalRoot) NewIntermediate(context.Context) (*ca.Authority, *trust.TrustBundle, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("intermediate key: %w", err)
	}
	cert, err := r.cfg.Root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: key.Public(), TrustDomain: r.cfg.TrustDomain, Cluster: r.cfg.Cluster,
		ServingNames: r.cfg.ServingNames, WorkloadDNSNames: r.cfg.WorkloadDNSNames, TTL: r.cfg.TTL, Now: time.Now(),
	})
	if err != nil {
		return nil, nil, err
	}
	a, err := ca.NewAuthority(cert, key)
	if err != nil {
		return nil, nil, err
	}
	return a, r.bundle, nil
}

// WatchBundle returns when ctx is cancelled: the bundle never changes.
func (r *LocalRoot) WatchBundle(ctx context.Context, _ func(*trust.TrustBundle)) error {
	<-ctx.Done()
	return nil
}
