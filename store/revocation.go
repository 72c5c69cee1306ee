package store

import (
	"context"
	"time"
)

// Kinds of revocation.
const (
	// RevokeSerial denies one certificate, by lower-case hex serial.
	RevokeSerial = "serial"
	// RevokeSPIFFEID denies every certificate of an identity and any new one.
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
	Unrevoke(ctx context.Context, kind, value string, ev AuditEvent) error
	// Revocations lists the revocations in force at now (not lifted, and
	// ExpiresAt zero or after now), by ID.
	Revocations(ctx context.Context, now time.Time) ([]Revocation, error)
}
