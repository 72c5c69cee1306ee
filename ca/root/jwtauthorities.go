package root

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// JWT-SVID authorities in the bundle. Issuers hand their JWT signing keys
// to PublishCRLs, each with the certificate chain that authenticates it: a
// "JWT signer" certificate issued by one of the caller's intermediates.
// The root checks each against its in-bundle roots (trust.VerifyJWTAuthority)
// and the caller's cluster, and puts it into the entry of the caller's
// trust domain until it expires, also once the issuer stops naming it:
// JWT-SVIDs it signed may still be in use. Like issuer CRLs, the keys are
// outside the bundle signature (each authenticates itself by its chain),
// but a change publishes a new bundle; and each replica stores what it
// accepts and merges what the others stored.

// maxJWTAuthoritiesPerCall bounds the JWT authorities of one PublishCRLs
// call: an issuer has one key per intermediate, and a few intermediates.
const maxJWTAuthoritiesPerCall = 32

// jwtAuthority is a JWT authority an issuer published, verified when it
// came in. authority.ExpiresAt is always set: the published expiry, or the
// certificate's NotAfter.
type jwtAuthority struct {
	authority   trust.JWTAuthority
	cluster     string
	trustDomain spiffeid.TrustDomain
	// interSerial is the serial of the intermediate that issued its
	// certificate (lower-case hex).
	interSerial string
}

// checkJWTAuthorities verifies the JWT authorities of a PublishCRLs call
// by cluster c of trust domain td: every one must verify under roots at now
// and have its certificate issued by one of inters, the cluster's
// intermediates. One bad authority fails the whole call.
func checkJWTAuthorities(in []*meshcav1.JWTAuthority, c store.Cluster, td spiffeid.TrustDomain, roots *trust.Bundle,
	inters []store.Intermediate, now time.Time) ([]jwtAuthority, error) {
	if n := len(in); n > maxJWTAuthoritiesPerCall {
		return nil, fmt.Errorf("%w: %d JWT authorities in one call (at most %d)", grpcx.ErrInvalidArgument, n, maxJWTAuthoritiesPerCall)
	}
	out := make([]jwtAuthority, 0, len(in))
	for i, p := range in {
		a, err := trust.JWTAuthorityFromProto(p)
		if err != nil {
			return nil, fmt.Errorf("%w: JWT authority %d: %w", grpcx.ErrInvalidArgument, i, err)
		}
		a.Chain = cloneDERs(a.Chain)
		got, err := checkJWTAuthority(a, c.Name, td, roots, inters, now)
		if err != nil {
			return nil, fmt.Errorf("%w: JWT authority %d: %w", grpcx.ErrInvalidArgument, i, err)
		}
		out = append(out, got)
	}
	return out, nil
}

// checkJWTAuthority verifies one JWT authority of cluster in td: under
// roots at now, with its certificate issued by one of inters (the
// cluster's unexpired intermediates), so that an issuer cannot publish keys
// for another cluster.
func checkJWTAuthority(a trust.JWTAuthority, cluster string, td spiffeid.TrustDomain, roots *trust.Bundle,
	inters []store.Intermediate, now time.Time) (jwtAuthority, error) {
	if err := trust.VerifyJWTAuthority(a, td, roots, now); err != nil {
		return jwtAuthority{}, err
	}
	leaf, err := x509.ParseCertificate(a.Chain[0])
	if err != nil {
		return jwtAuthority{}, err
	}
	issuer, err := x509.ParseCertificate(a.Chain[1])
	if err != nil {
		return jwtAuthority{}, err
	}
	sum := sha256.Sum256(issuer.Raw)
	fp, serial := hex.EncodeToString(sum[:]), trust.SerialHex(issuer.SerialNumber)
	if !slices.ContainsFunc(inters, func(in store.Intermediate) bool { return in.Serial == serial && in.Fingerprint == fp }) {
		return jwtAuthority{}, fmt.Errorf("JWT authority %q: its certificate's issuer (serial %s) is not an intermediate of cluster %s",
			a.KeyID, serial, cluster)
	}
	if a.ExpiresAt.IsZero() {
		a.ExpiresAt = leaf.NotAfter
	}
	a.ExpiresAt = a.ExpiresAt.UTC().Truncate(time.Second)
	return jwtAuthority{authority: a, cluster: cluster, trustDomain: td, interSerial: serial}, nil
}

func cloneDERs(ders [][]byte) [][]byte {
	out := make([][]byte, len(ders))
	for i, d := range ders {
		out[i] = bytes.Clone(d)
	}
	return out
}

// addJWTAuthorityLocked keeps a unless the same key is kept with an expiry
// as late or later, and reports whether it changed anything.
func (r *Root) addJWTAuthorityLocked(a jwtAuthority) bool {
	old, ok := r.jwtAuthorities[a.authority.KeyID]
	if ok && (old.cluster != a.cluster || !old.authority.ExpiresAt.Before(a.authority.ExpiresAt)) {
		return false
	}
	r.jwtAuthorities[a.authority.KeyID] = a
	return true
}

// storeJWTAuthorities stores the JWT authorities a PublishCRLs call
// brought, for the other replicas. A failure leaves them with this replica
// only, which publishes them anyway; the issuer hands them over again with
// its next PublishCRLs.
func (r *Root) storeJWTAuthorities(ctx context.Context, in []jwtAuthority) {
	rs, ok := r.cfg.Store.(ReplicaStore)
	if !ok {
		return
	}
	for _, a := range in {
		pub, err := x509.MarshalPKIXPublicKey(a.authority.PublicKey)
		if err == nil {
			err = rs.PutJWTAuthority(ctx, store.JWTAuthority{
				KeyID: a.authority.KeyID, Cluster: a.cluster, TrustDomain: a.trustDomain.Name(), PublicKey: pub,
				Chain: a.authority.Chain, ExpiresAt: a.authority.ExpiresAt,
			})
		}
		if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
			r.log.WarnContext(ctx, "cannot store a JWT authority for the other root replicas; this one publishes it",
				"cluster", a.cluster, "kid", a.authority.KeyID, "error", err)
		}
	}
}

// mergeStoredJWTAuthoritiesLocked adds the stored JWT authorities this
// replica lacks (or holds with an earlier expiry), each verified again
// under the in-bundle roots and against the unexpired intermediates inters
// of its cluster, as long as the cluster holds fewer than
// maxHeldPerCluster.
func (r *Root) mergeStoredJWTAuthoritiesLocked(ctx context.Context, now time.Time, inters []store.Intermediate) {
	rs, ok := r.cfg.Store.(ReplicaStore)
	if !ok {
		return
	}
	rows, err := rs.JWTAuthorities(ctx, now)
	if err != nil {
		r.log.WarnContext(ctx, "cannot read the JWT authorities other root replicas stored", "error", err)
		return
	}
	if len(rows) == 0 {
		return
	}
	pool, err := r.inBundleRootsLocked()
	if err != nil {
		return
	}
	byCluster := map[string][]store.Intermediate{}
	for _, in := range inters {
		byCluster[in.Cluster] = append(byCluster[in.Cluster], in)
	}
	held := r.heldLocked(now)
	for _, row := range rows {
		old, kept := r.jwtAuthorities[row.KeyID]
		if kept && !old.authority.ExpiresAt.Before(row.ExpiresAt) {
			continue
		}
		if n := held[row.Cluster]; !kept && n.jwts >= maxHeldPerCluster {
			continue
		}
		got, err := storedJWTAuthority(row, pool, byCluster[row.Cluster], now)
		if err != nil {
			r.log.WarnContext(ctx, "ignoring a stored JWT authority", "cluster", row.Cluster, "kid", row.KeyID, "error", err)
			continue
		}
		if !r.revs.clusters[got.cluster] && r.addJWTAuthorityLocked(got) && !kept {
			n := held[got.cluster]
			n.jwts++
			held[got.cluster] = n
		}
	}
}

// storedJWTAuthority verifies a stored JWT authority as checkJWTAuthority
// verifies a published one.
func storedJWTAuthority(row store.JWTAuthority, roots *trust.Bundle, inters []store.Intermediate, now time.Time) (jwtAuthority, error) {
	td, err := spiffeid.TrustDomainFromString(row.TrustDomain)
	if err != nil {
		return jwtAuthority{}, err
	}
	pub, err := x509.ParsePKIXPublicKey(row.PublicKey)
	if err != nil {
		return jwtAuthority{}, err
	}
	a := trust.JWTAuthority{KeyID: row.KeyID, PublicKey: pub, ExpiresAt: row.ExpiresAt, Chain: row.Chain}
	return checkJWTAuthority(a, row.Cluster, td, roots, inters, now)
}

// inBundleRootsLocked returns the roots of the bundle's own trust domains.
func (r *Root) inBundleRootsLocked() (*trust.Bundle, error) {
	var roots []*x509.Certificate
	for _, s := range r.statuses {
		if s.State.InBundle() {
			roots = append(roots, s.Cert)
		}
	}
	return trust.NewBundle(roots...)
}

// pruneJWTAuthoritiesLocked drops the JWT authorities that expired, or
// whose cluster or issuing intermediate is revoked.
func (r *Root) pruneJWTAuthoritiesLocked(ctx context.Context, now time.Time) {
	for k, a := range r.jwtAuthorities {
		why := "expired"
		if now.Before(a.authority.ExpiresAt) {
			why = r.revs.revokedIssuer(a.cluster, a.interSerial)
		}
		if why == "" {
			continue
		}
		delete(r.jwtAuthorities, k)
		r.log.InfoContext(ctx, "dropped a JWT authority", "cluster", a.cluster, "kid", a.authority.KeyID, "reason", why)
	}
}

// domainJWTAuthoritiesLocked returns the JWT authorities of own trust
// domain td, by key ID.
func (r *Root) domainJWTAuthoritiesLocked(td spiffeid.TrustDomain) []trust.JWTAuthority {
	var out []trust.JWTAuthority
	for _, a := range r.jwtAuthorities {
		if a.trustDomain == td {
			out = append(out, a.authority)
		}
	}
	slices.SortFunc(out, func(x, y trust.JWTAuthority) int { return cmp.Compare(x.KeyID, y.KeyID) })
	return out
}

// refuseJWTAuthorities records a PublishCRLs call refused for one of its
// JWT authorities in the audit log: a credential that tries to publish a
// key it may not is worth a trace beyond the request log.
func (r *Root) refuseJWTAuthorities(ctx context.Context, caller issuerCaller, reason error) {
	ev := r.credentialEvent(caller.id, caller.cluster, caller.serial, "jwt_authority.refuse", reason.Error())
	if err := r.cfg.Store.AppendAudit(ctx, ev); err != nil {
		r.log.WarnContext(ctx, "cannot record a refused JWT authority in the audit log", "cluster", caller.cluster.Name, "error", err)
	}
}
