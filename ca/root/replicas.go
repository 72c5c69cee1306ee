package root

import (
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/meshca/meshca/internal/grpcx"
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

// checkReplicaName reports what is wrong with the name replica enrolling
// with a join token of cluster c for replicas: each replica must name
// itself.
func checkReplicaName(c store.Cluster, replica string, replicas int) error {
	switch {
	case replica == "":
		return fmt.Errorf("%w: the join token of cluster %s is for %d replicas: each replica must name itself (upstream.replica)",
			grpcx.ErrInvalidArgument, c.Name, replicas)
	case !validClusterName(replica):
		return fmt.Errorf("%w: replica name %q: use 1 to 63 lower-case letters, digits and '-', not at either end",
			grpcx.ErrInvalidArgument, replica)
	}
	return nil
}

// admitReplica decides whether replica of cluster c may enrol with a join
// token of replicas: fewer than replicas other replicas of c may hold a
// live lineage whose current credential is not revoked. A replica
// enrolling again under its own name (it lost its credential) replaces its
// lineage and takes no new place. The caller holds replicaMu.
func (r *Root) admitReplica(ctx context.Context, c store.Cluster, replica string, replicas int, now time.Time) error {
	recs, err := r.cfg.Store.ClusterCredentials(ctx, c.Name)
	if err != nil {
		return fmt.Errorf("%w: credential records of cluster %s: %w", grpcx.ErrUnavailable, c.Name, err)
	}
	revs, err := r.cfg.Store.Revocations(ctx, now)
	if err != nil {
		return fmt.Errorf("%w: read the deny-list: %w", grpcx.ErrUnavailable, err)
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
		"cluster", c.Name, "replica", replica, "replicas", replicas, "live", live, "peer", grpcx.PeerAddr(ctx))
	return fmt.Errorf("%w: cluster %s has %d live issuer replicas (%s), the most its join token admits: "+
		"revoke a gone replica's credential, wait %s after one stopped, or add the cluster again with more --replicas",
		grpcx.ErrFailedPrecondition, c.Name, len(live), strings.Join(live, ", "), r.cfg.IntermediateTTL)
}

// startLineage signs the first credential of a new lineage of replica of
// cluster c, which redeemed a join token of replicas, and records the
// lineage. With a token of several replicas the replica must be admitted
// first (admitReplica), and admission and recording happen under
// replicaMu, so that concurrent enrolments through this root server
// cannot together exceed replicas. Root servers sharing a store do not
// serialise each other here.
func (r *Root) startLineage(ctx context.Context, st *state, c store.Cluster, replica string, replicas int, credPub crypto.PublicKey) (*x509.Certificate, error) {
	if replicas > 1 {
		r.replicaMu.Lock()
		defer r.replicaMu.Unlock()
		// A token of several replicas stays valid: refusing here burns
		// nothing.
		if err := r.admitReplica(ctx, c, replica, replicas, r.cfg.Now()); err != nil {
			return nil, err
		}
	}
	cred, err := r.signCredential(st, c, replica, credPub)
	if err != nil {
		return nil, err
	}
	key := lineageKey{c.Name, replica}
	lineage := func(old store.ClusterCredential, found bool) store.ClusterCredential {
		return afterEnrol(old, found, key, cred)
	}
	if err := r.swapUntilDone(ctx, key, lineage, r.credentialIssued("join-token", c, cred, st.active.Certificate)); err != nil {
		return nil, fmt.Errorf("%w: record credential: %w", grpcx.ErrUnavailable, err)
	}
	return cred, nil
}
