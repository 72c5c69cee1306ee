package root

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// Issuer CRLs shared between root replicas. An issuer publishes its CRLs to
// whichever replica its connection reached. That replica stores each CRL it
// accepts (ReplicaStore.PutIssuerCRL), and every replica merges the stored
// ones at each re-evaluation, verifying them again as if published to it:
// every replica relays every issuer's newest CRLs, and a restarted root has
// them at once instead of when each issuer next publishes.

// storeIssuerCRLs stores the CRLs a PublishCRLs call brought, for the other
// replicas. A failure leaves them with this replica only, which relays them
// anyway; the issuer publishes again at its next change or republication.
func (r *Root) storeIssuerCRLs(ctx context.Context, in []issuerCRL) {
	rs, ok := r.cfg.Store.(ReplicaStore)
	if !ok {
		return
	}
	for _, c := range in {
		if !c.number.IsInt64() {
			r.log.WarnContext(ctx, "an issuer CRL number does not fit the store; only this root replica relays the CRL",
				"cluster", c.cluster, "serial", c.serial, "number", c.number.String())
			continue
		}
		err := rs.PutIssuerCRL(ctx, store.IssuerCRL{
			IssuerSerial: c.serial, Cluster: c.cluster, Number: c.number.Int64(), DER: c.crl.DER,
			IssuerChain: c.crl.IssuerChain, IssuerNotAfter: c.issuerNotAfter,
		})
		if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
			r.log.WarnContext(ctx, "cannot store an issuer CRL for the other root replicas; this one relays it",
				"cluster", c.cluster, "serial", c.serial, "error", err)
		}
	}
}

// mergeStoredIssuerCRLsLocked adds the stored issuer CRLs newer than the
// held ones, each verified under the in-bundle roots and against the
// unexpired intermediates inters of its cluster, as long as the cluster
// holds fewer than maxHeldPerCluster. It reports whether any was added.
func (r *Root) mergeStoredIssuerCRLsLocked(ctx context.Context, now time.Time, inters []store.Intermediate) bool {
	rs, ok := r.cfg.Store.(ReplicaStore)
	if !ok {
		return false
	}
	rows, err := rs.IssuerCRLs(ctx, now)
	if err != nil {
		r.log.WarnContext(ctx, "cannot read the issuer CRLs other root replicas stored", "error", err)
		return false
	}
	if len(rows) == 0 {
		return false
	}
	var roots []*x509.Certificate
	for _, s := range r.statuses {
		if s.State.InBundle() {
			roots = append(roots, s.Cert)
		}
	}
	pool, err := trust.NewBundle(roots...)
	if err != nil {
		return false
	}
	byCluster := map[string][]store.Intermediate{}
	domain := map[string]string{}
	for _, in := range inters {
		byCluster[in.Cluster] = append(byCluster[in.Cluster], in)
		domain[in.Serial] = in.TrustDomain
	}
	added := false
	held := r.heldLocked(now)
	for _, row := range rows {
		old, kept := r.issuerCRLs[row.IssuerSerial]
		if kept && big.NewInt(row.Number).Cmp(old.number) <= 0 {
			continue
		}
		if n := held[row.Cluster]; !kept && n.crls >= maxHeldPerCluster {
			continue
		}
		got, ok, err := checkIssuerCRL(trust.CRL{DER: row.DER, IssuerChain: row.IssuerChain}, pool, byCluster[row.Cluster], row.Cluster, now)
		if err != nil {
			r.log.WarnContext(ctx, "ignoring a stored issuer CRL", "cluster", row.Cluster, "serial", row.IssuerSerial, "error", err)
			continue
		}
		td, err := spiffeid.TrustDomainFromString(domain[got.serial])
		if !ok || err != nil || r.revs.clusters[got.cluster] {
			continue
		}
		got.trustDomain = td
		r.issuerCRLs[got.serial] = got
		added = true
		if !kept {
			n := held[got.cluster]
			n.crls++
			held[got.cluster] = n
		}
	}
	return added
}
