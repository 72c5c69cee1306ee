package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Kinds of revocation.
const (
	// RevokeSerial denies one certificate, by lower-case hex serial.
	RevokeSerial = "serial"
	// RevokeSPIFFEID denies every certificate of an identity and any new one.
	// Lifting it only lets the identity get new certificates: those it
	// had stay revoked until they expire (see RevocationStore.Unrevoke).
	RevokeSPIFFEID = "spiffe_id"
	// RevokeCluster denies a whole cluster (root): its issuer can no longer
	// enrol or renew.
	RevokeCluster = "cluster"
	// RevokeIntermediate denies one cluster intermediate, by serial; the
	// root's CRL lists it.
	RevokeIntermediate = "intermediate"
)

// Revocation is one entry of the deny-list.
type Revocation struct {
	// ID is assigned by the store; it only grows.
	ID    int64
	Kind  string
	Value string
	// Cluster the revoked thing belongs to, when known.
	Cluster   string
	Reason    string
	RevokedBy string
	// RevokedAt has second precision, UTC; zero on a write means now.
	RevokedAt time.Time
	// ExpiresAt is when the entry may leave CRLs and the deny-list: the
	// latest NotAfter of what it revokes. Zero means never.
	ExpiresAt time.Time
}

// RevocationStore keeps the deny-list. Issuer replicas sharing a database
// learn each other's revocations by calling Revocations (every second).
type RevocationStore interface {
	// Revoke records r with its audit event in one transaction and returns
	// it with ID and RevokedAt set. A revocation in force of the same kind
	// and value wraps ErrAlreadyExists and writes nothing; one that was
	// lifted is put in force again.
	Revoke(ctx context.Context, r Revocation, ev AuditEvent) (Revocation, error)
	// Unrevoke lifts the revocation in force of kind and value, with its
	// audit event; none in force wraps ErrNotFound and writes nothing.
	// Lifting a SPIFFE ID revocation also records, in the same transaction,
	// a RevokeSerial entry for every certificate of the ID recorded before
	// the lift and not expired (of the entry's Cluster, or of every cluster
	// when it has none), with the lifted entry's Reason, RevokedBy and
	// RevokedAt and the certificate's NotAfter as ExpiresAt: a revoked key
	// stays on CRLs until it expires, and only new issuance is allowed
	// again. A serial already in force is left as it is.
	Unrevoke(ctx context.Context, kind, value string, ev AuditEvent) error
	// Revocations lists the revocations in force at now (not lifted, and
	// ExpiresAt zero or after now), by ID.
	Revocations(ctx context.Context, now time.Time) ([]Revocation, error)
}

// Validate reports what makes r unfit for the deny-list (backends call it
// before writing).
func (r Revocation) Validate() error {
	if err := ValidateRevocationTarget(r.Kind, r.Value); err != nil {
		return err
	}
	switch {
	case r.RevokedBy == "":
		return errors.New("empty revoked by")
	case !r.ExpiresAt.IsZero() && r.ExpiresAt.Unix() <= 0:
		// The stored form of "never" is 0.
		return fmt.Errorf("expires at %v, not after the Unix epoch", r.ExpiresAt)
	}
	return nil
}

// ValidateRevocationTarget checks a revocation's kind and value.
func ValidateRevocationTarget(kind, value string) error {
	switch kind {
	case RevokeSerial, RevokeSPIFFEID, RevokeCluster, RevokeIntermediate:
	default:
		return fmt.Errorf("unknown revocation kind %q", kind)
	}
	if value == "" {
		return errors.New("empty value")
	}
	return nil
}

// ExpiresUnix is the stored form of an ExpiresAt: Unix seconds, 0 for the
// zero time (never). ExpiresFromUnix is its inverse, in UTC.
func ExpiresUnix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// ExpiresFromUnix turns a stored ExpiresAt back into a time (zero for 0).
func ExpiresFromUnix(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}
