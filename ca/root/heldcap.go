package root

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
)

// Caps on what one cluster's issuer makes the root hold. Issuer CRLs and
// JWT authorities go into the bundle every cluster's issuer receives, and
// each stays until it expires (up to an intermediate's life), whether or
// not its issuer still names it. An issuer signs JWT signer certificates
// and CRLs under its own intermediates at will, and can have the root sign
// intermediates by renewing, so without a cap one issuer could grow the
// bundle past what gRPC clients receive (4 MiB by default) and stop every
// cluster's renewals.
//
// An honest issuer replica holds one JWT key and one CRL per intermediate.
// It prepares its next intermediate at half-life, so two or three of its
// intermediates are unexpired at a time; a restart makes a new key for the
// current and the prepared one. maxHeldPerIssuer leaves room for about six
// restarts within an intermediate's life on top of that. A cluster may hold
// that many per live issuer replica (credential lineage, replicas.go).
const maxHeldPerIssuer = 16

// maxHeldPerCluster bounds what the root merges of a cluster's published
// items from the store, which other root replicas accepted against their
// own counts: the most any cluster may hold.
const maxHeldPerCluster = maxHeldPerIssuer * store.MaxReplicas

// heldLimit returns how many unexpired issuer CRLs, and how many JWT
// authorities, cluster c may have the root hold at now: maxHeldPerIssuer
// per live issuer replica, and at least maxHeldPerIssuer.
func (r *Root) heldLimit(ctx context.Context, c store.Cluster, now time.Time) (int, error) {
	recs, err := r.cfg.Store.ClusterCredentials(ctx, c.Name)
	if err != nil {
		return 0, fmt.Errorf("%w: credential records of cluster %s: %w", grpcx.ErrUnavailable, c.Name, err)
	}
	live := 0
	for _, rec := range recs {
		if liveLineage(rec, now, r.cfg.IntermediateTTL) {
			live++
		}
	}
	return maxHeldPerIssuer * max(live, 1), nil
}

// heldCounts is how many unexpired issuer CRLs and JWT authorities a
// cluster has the root hold.
type heldCounts struct{ crls, jwts int }

// heldLocked returns, by cluster, the unexpired issuer CRLs and JWT
// authorities held at now.
func (r *Root) heldLocked(now time.Time) map[string]heldCounts {
	out := map[string]heldCounts{}
	for _, c := range r.issuerCRLs {
		if now.Before(c.nextUpdate) && now.Before(c.issuerNotAfter) {
			n := out[c.cluster]
			n.crls++
			out[c.cluster] = n
		}
	}
	for _, a := range r.jwtAuthorities {
		if now.Before(a.authority.ExpiresAt) {
			n := out[a.cluster]
			n.jwts++
			out[a.cluster] = n
		}
	}
	return out
}

// checkHeldLocked refuses a PublishCRLs call of cluster that would have
// the root hold more than limit issuer CRLs or more than limit JWT
// authorities of it at now. Only what the call adds counts against the
// limit: republishing what is held is always accepted.
func (r *Root) checkHeldLocked(cluster string, in []issuerCRL, jwts []jwtAuthority, limit int, now time.Time) error {
	held := r.heldLocked(now)[cluster]
	newCRLs := map[string]bool{}
	for _, c := range in {
		if _, ok := r.issuerCRLs[c.serial]; !ok {
			newCRLs[c.serial] = true
		}
	}
	newKeys := map[string]bool{}
	for _, a := range jwts {
		if _, ok := r.jwtAuthorities[a.authority.KeyID]; !ok {
			newKeys[a.authority.KeyID] = true
		}
	}
	for _, k := range []struct {
		what      string
		held, add int
	}{{"issuer CRLs", held.crls, len(newCRLs)}, {"JWT authorities", held.jwts, len(newKeys)}} {
		if k.add > 0 && k.held+k.add > limit {
			return fmt.Errorf("%w: cluster %s would have the root hold %d %s, more than its limit of %d "+
				"(%d per live issuer replica); each is held until it expires",
				grpcx.ErrFailedPrecondition, cluster, k.held+k.add, k.what, limit, maxHeldPerIssuer)
		}
	}
	return nil
}
