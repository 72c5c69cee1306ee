// Package store records every issued certificate and every audit event.
// Implementations live in sub-packages (sqlite, embedded, and postgres);
// no SQL leaves this package tree.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a lookup matches nothing.
var ErrNotFound = errors.New("not found")

// ErrAlreadyExists is wrapped by the error of a write that would record a
// certificate serial that is already recorded. It is the caller's fault; the
// store is unchanged by that write.
var ErrAlreadyExists = errors.New("already exists")

// ErrClosed is wrapped by the error of every operation started after Close.
var ErrClosed = errors.New("store closed")

// Certificate is the record of one issued certificate.
type Certificate struct {
	// Serial is the lower-case hexadecimal serial number, no separators.
	Serial   string
	SPIFFEID string
	Cluster  string
	// NotBefore and NotAfter are stored with second precision, in UTC.
	NotBefore time.Time
	NotAfter  time.Time
	// Fingerprint is the lower-case hexadecimal SHA-256 of the DER certificate.
	Fingerprint string
	// PodUID is the attested pod UID, empty when the token was not pod-bound.
	PodUID string
}

// AuditEvent is one entry of the append-only audit log. The store assigns
// Seq (1 for the first event, then consecutive), PrevHash and Hash, ignoring
// whatever the caller put there; see [ChainHash] for how they link up.
//
// Time is stored with second precision, in UTC. A zero Time on a write means
// "now" according to the store's clock.
type AuditEvent struct {
	Seq      int64
	Time     time.Time
	Actor    string // who acted: a SPIFFE ID, "system:serviceaccount:ns:sa", "admin:<user>"
	Action   string // e.g. "certificate.issue"
	Cluster  string
	SPIFFEID string
	Serial   string
	// Detail is free text for humans; never key material or tokens.
	Detail   string
	PrevHash []byte
	Hash     []byte
}

// CertificateFilter selects certificates; zero fields match everything.
type CertificateFilter struct {
	SPIFFEID string
	Cluster  string
	// ActiveAt, when non-zero, keeps only certificates valid at that instant:
	// NotBefore <= ActiveAt <= NotAfter, as in X.509.
	ActiveAt time.Time
	// Limit caps the number of rows; zero means no limit.
	Limit int
}

// Store is the full storage contract. Consumers should declare the smaller
// interface they need instead of depending on this one.
type Store interface {
	// RecordIssuance durably records cert and its audit event in one
	// transaction. It returns only after the records are committed; an error
	// means nothing was recorded and the certificate must not be released.
	RecordIssuance(ctx context.Context, cert Certificate, ev AuditEvent) error
	// AppendAudit durably appends one audit event.
	AppendAudit(ctx context.Context, ev AuditEvent) error
	// Certificate returns the certificate with the given serial or ErrNotFound.
	Certificate(ctx context.Context, serial string) (Certificate, error)
	// Certificates lists certificates matching f, newest first: by NotBefore
	// descending, then by Serial ascending.
	Certificates(ctx context.Context, f CertificateFilter) ([]Certificate, error)
	// AuditEvents returns events with Time >= since, in sequence order.
	AuditEvents(ctx context.Context, since time.Time) ([]AuditEvent, error)
	// Close releases resources; pending writes are flushed or failed first.
	// Operations started after Close fail with an error wrapping ErrClosed.
	Close() error
}

// AuditHeadReader reads the head of the audit chain, and the hash of any
// event in it. Both backends implement it; audit checkpoints sign what
// AuditHead returns.
type AuditHeadReader interface {
	// AuditHead returns the seq and hash of the last event, or the zero
	// ChainHead for an empty log.
	AuditHead(ctx context.Context) (ChainHead, error)
	// AuditHashAt returns the hash of the event at seq, or an error
	// wrapping ErrNotFound.
	AuditHashAt(ctx context.Context, seq int64) ([]byte, error)
}
