package root

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshca/meshca/store"
)

// Issuer replicas. `meshca admin cluster add --replicas N` makes a join
// token that N replicas of the cluster's issuer share (one Secret mounted in
// every replica): each enrols with it under its own replica name and gets
// its own credential lineage and intermediates, so the lineage rule of
// credential.go holds per replica and no replica ever holds another's key.
// The token stays redeemable until it expires; what bounds it is the number
// of live replica lineages.

// liveLineage reports whether rec belongs to an issuer that may still be
// serving at now: not revoked, and renewed or first used within window (an
// intermediate's lifetime). An issuer that has not renewed for that long
// holds no valid intermediate, so a replaced replica frees its place without
// an administrator.
func liveLineage(rec store.ClusterCredential, now time.Time, window time.Duration) bool {
	return !rec.Revoked && rec.UpdatedAt.After(now.Add(-window))
}

// admitReplica decides whether replica of cluster c may enrol with a join
// token of replicas: it must be named, and fewer than replicas other
// replicas of c may hold a live lineage whose current credential is not
// revoked. A replica enrolling again under
// its own name (it lost its credential) replaces its lineage and takes no
// new place.
func (r *Root) admitReplica(ctx context.Context, c store.Cluster, replica string, replicas int, now time.Time) error {
	switch {
	case replica == "":
		return fmt.Errorf("%w: the join token of cluster %s is for %d replicas: each replica must name itself (upstream.replica)",
			errInvalidArgument, c.Name, replicas)
	case !validClusterName(replica):
		return fmt.Errorf("%w: replica name %q: use 1 to 63 lower-case letters, digits and '-', not at either end",
			errInvalidArgument, replica)
	}
	recs, err := r.cfg.Store.ClusterCredentials(ctx, c.Name)
	if err != nil {
		return fmt.Errorf("%w: credential records of cluster %s: %w", errUnavailable, c.Name, err)
	}
	revs, err := r.cfg.Store.Revocations(ctx, now)
	if err != nil {
		return fmt.Errorf("%w: read the deny-list: %w", errUnavailable, err)
	}
	denied := map[string]bool{}
	for _, e := range revs {
		if e.Kind == store.RevokeSerial {
			denied[e.Value] = true
		}
	}
	var live []string
	for _, rec := range recs {
		// A replica whose current credential is revoked is removed.
		if rec.Replica != replica && !denied[rec.Current] && liveLineage(rec, now, r.cfg.IntermediateTTL) {
			live = append(live, cmp.Or(rec.Replica, "(unnamed)"))
		}
	}
	if len(live) < replicas {
		return nil
	}
	r.log.WarnContext(ctx, "issuer replica refused: the cluster has as many live replicas as its join token admits",
		"cluster", c.Name, "replica", replica, "replicas", replicas, "live", live, "peer", peerAddr(ctx))
	return fmt.Errorf("%w: cluster %s has %d live issuer replicas (%s), the most its join token admits: "+
		"revoke a gone replica's credential, wait %s after one stopped, or add the cluster again with more --replicas",
		errFailedPrecondition, c.Name, len(live), strings.Join(live, ", "), r.cfg.IntermediateTTL)
}
