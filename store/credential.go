package store

import (
	"errors"
	"fmt"
	"time"
)

// ErrConflict is wrapped by the error of a compare-and-swap write whose
// expected state is no longer the stored one (another writer got there
// first). The store is unchanged by that write.
var ErrConflict = errors.New("conflict")

// ClusterCredential is the root's record of which issuer credentials of one
// issuer of a cluster (a credential lineage) it accepts: the current one
// and, until the current one has been used, the one it replaced. Serials
// are lower-case hexadecimal.
type ClusterCredential struct {
	Cluster string
	// Replica names the issuer replica of Cluster the lineage belongs to;
	// empty for the single issuer enrolled by a one-time join token.
	Replica string
	// Current is the serial of the newest credential the root issued to
	// the cluster.
	Current string
	// Previous is the serial of the credential Current replaced; empty
	// after enrolment.
	Previous string
	// CurrentUsed is true once the holder of Current authenticated with
	// it; from then on Previous is no longer accepted.
	CurrentUsed bool
	// Revoked is true once the root saw a credential of the cluster
	// reused: none is accepted until the cluster enrols again.
	Revoked bool
	// Newest is the NotBefore of the newest credential issued to the
	// cluster (Current's, while there is one); a revoked lineage keeps it.
	// Second precision, UTC; zero means unknown.
	Newest time.Time
	// Since is the Newest of the lineage the cluster's last enrolment
	// replaced: a credential whose NotBefore is not after it belongs to an
	// earlier enrolment. Zero means none.
	Since time.Time
	// UpdatedAt has second precision, UTC; the store sets it on write.
	UpdatedAt time.Time
}

// SameState reports whether c and o hold the same accepted credentials
// (every field but UpdatedAt): what SwapClusterCredential compares.
func (c ClusterCredential) SameState(o ClusterCredential) bool {
	return c.Cluster == o.Cluster && c.Replica == o.Replica && c.Current == o.Current && c.Previous == o.Previous &&
		c.CurrentUsed == o.CurrentUsed && c.Revoked == o.Revoked && c.Since.Unix() == o.Since.Unix() &&
		c.Newest.Unix() == o.Newest.Unix()
}

// ValidateSwapClusterCredential reports what makes a SwapClusterCredential
// call invalid (backends call it before writing).
func ValidateSwapClusterCredential(old, next ClusterCredential) error {
	switch {
	case next.Cluster == "":
		return errors.New("empty cluster")
	case old.Cluster != "" && old.Cluster != next.Cluster:
		return fmt.Errorf("expected state is of cluster %s, not %s", old.Cluster, next.Cluster)
	case old.Cluster != "" && old.Replica != next.Replica:
		return fmt.Errorf("expected state is of replica %q, not %q", old.Replica, next.Replica)
	case next.Current == "" && !next.Revoked:
		return errors.New("empty current serial")
	}
	return nil
}
