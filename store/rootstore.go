package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"time"
)

// Cluster is a cluster registered with the root by `meshca admin cluster add`.
type Cluster struct {
	Name        string
	TrustDomain string
	// DNSNames are the workload DNS names the root lets the cluster's
	// intermediates admit, each exactly (istiod's serving names): lower-case
	// DNS names without wildcards, at most MaxClusterDNSNames. Nil means
	// none.
	DNSNames []string
	// CreatedAt has second precision, UTC; the store sets it on insert.
	CreatedAt time.Time
}

// JoinToken is an enrolment token. Only its hash is stored.
type JoinToken struct {
	// Hash is the lower-case hexadecimal SHA-256 of the token.
	Hash    string
	Cluster string
	// ExpiresAt has second precision, UTC.
	ExpiresAt time.Time
	// Replicas is how many issuer replicas of the cluster may hold a live
	// credential lineage at once through this token. 0 or 1: a one-time
	// token, used up by its first enrolment. More: a join secret shared by
	// the replicas, redeemable any number of times until it expires.
	Replicas int
}

// Intermediate is the record of one cluster intermediate signed by a root.
type Intermediate struct {
	// Serial is the lower-case hexadecimal serial number.
	Serial      string
	Cluster     string
	TrustDomain string
	// RootFingerprint is the lower-case hex SHA-256 of the DER root that
	// signed it.
	RootFingerprint string
	// NotBefore and NotAfter have second precision, UTC.
	NotBefore, NotAfter time.Time
	// Fingerprint is the lower-case hex SHA-256 of DER.
	Fingerprint string
	DER         []byte
}

// IntermediateFilter selects intermediates; zero fields match everything.
type IntermediateFilter struct {
	Cluster         string
	RootFingerprint string
	// ActiveAt, when non-zero, keeps only those with NotBefore <= ActiveAt
	// <= NotAfter.
	ActiveAt time.Time
}

// Root is one root CA the root service has created. Which roots are in the
// bundle and which one signs is decided from these records and the clock
// (package ca), not stored.
type Root struct {
	// Fingerprint is the lower-case hex SHA-256 of the root's certificate
	// (the first of DER); the primary key.
	Fingerprint string
	// DER is the root's certificate; under an upstream PKI it is followed
	// by the upstream's intermediates and root (JoinDER).
	DER []byte
	// KeyRef names the key: a file path or "vault:<transit key name>".
	KeyRef string
	// AddedAt is when the root joined the bundle; ActivateAt is when it
	// starts signing. Second precision, UTC.
	AddedAt, ActivateAt time.Time
}

// RootStore is the root service's storage contract, implemented by both
// backends next to Store. Every write appends its audit event in the same
// transaction.
type RootStore interface {
	// AddCluster registers c, or finds it if a cluster of that name exists
	// with the same trust domain, and stores tok for it. A cluster of that
	// name with another trust domain is an error wrapping ErrAlreadyExists,
	// and nothing is written. c.DNSNames are stored with a new cluster; an
	// existing one keeps its own (SetClusterDNSNames changes them).
	AddCluster(ctx context.Context, c Cluster, tok JoinToken, ev AuditEvent) error
	// Cluster returns the named cluster or ErrNotFound.
	Cluster(ctx context.Context, name string) (Cluster, error)
	// SetClusterDNSNames replaces the named cluster's DNSNames (nil or
	// empty: none) and appends ev in one transaction. An unknown cluster
	// wraps ErrNotFound, and nothing is written.
	SetClusterDNSNames(ctx context.Context, name string, dnsNames []string, ev AuditEvent) error
	// RedeemJoinToken marks the token with this hash used and returns its
	// cluster and its Replicas (at least 1), appending ev (with Cluster
	// filled in) in the same transaction. A token that is unknown, expired
	// at now, or one-time and already used gives an error wrapping
	// ErrNotFound, and nothing is written. Two concurrent redemptions of
	// one one-time token: exactly one succeeds. A token of more replicas
	// stays redeemable until it expires.
	RedeemJoinToken(ctx context.Context, hash string, now time.Time, ev AuditEvent) (Cluster, int, error)
	// RecordIntermediate durably records in with its audit event. A serial
	// already recorded wraps ErrAlreadyExists.
	RecordIntermediate(ctx context.Context, in Intermediate, ev AuditEvent) error
	// Intermediates lists intermediates matching f by NotBefore ascending,
	// then Serial.
	Intermediates(ctx context.Context, f IntermediateFilter) ([]Intermediate, error)
	// AddRoot records a new root with its audit event. A fingerprint
	// already recorded wraps ErrAlreadyExists.
	AddRoot(ctx context.Context, r Root, ev AuditEvent) error
	// Roots lists every root recorded, by AddedAt ascending, then
	// Fingerprint.
	Roots(ctx context.Context) ([]Root, error)
	// ClusterCredential returns the credential record of replica of the
	// named cluster ("" for its single issuer), or an error wrapping
	// ErrNotFound when it has none.
	ClusterCredential(ctx context.Context, cluster, replica string) (ClusterCredential, error)
	// ClusterCredentials lists the credential records of every replica of
	// the named cluster, by Replica.
	ClusterCredentials(ctx context.Context, cluster string) ([]ClusterCredential, error)
	// SwapClusterCredential replaces the record of next.Cluster and
	// next.Replica with next (UpdatedAt set by the store) and appends ev,
	// in one transaction, if the stored record has the state of old (see
	// ClusterCredential.SameState); an old with an empty Cluster expects no
	// record. Otherwise the error wraps ErrConflict and nothing is written:
	// of two concurrent swaps from the same old state, exactly one succeeds.
	SwapClusterCredential(ctx context.Context, old, next ClusterCredential, ev AuditEvent) error
}

// MaxReplicas bounds JoinToken.Replicas.
const MaxReplicas = 64

// MaxClusterDNSNames bounds Cluster.DNSNames.
const MaxClusterDNSNames = 32

// ValidateClusterDNSNames reports what makes names unfit for
// Cluster.DNSNames: too many, a repeat, or one that is not a lower-case DNS
// name of letters, digits and hyphens (no wildcard, no space).
func ValidateClusterDNSNames(names []string) error {
	if len(names) > MaxClusterDNSNames {
		return fmt.Errorf("%d DNS names: at most %d", len(names), MaxClusterDNSNames)
	}
	for i, n := range names {
		if !dnsNameRE.MatchString(n) || len(n) > 253 || net.ParseIP(n) != nil {
			return fmt.Errorf("DNS name %q: want a lower-case DNS name without wildcards", n)
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("DNS name %q is given twice", n)
		}
	}
	return nil
}

// dnsNameRE is a lower-case DNS name: labels of letters, digits and inner
// hyphens, at most 63 characters each.
var dnsNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// ValidateAddCluster reports what makes an AddCluster call invalid (backends
// call it before writing): empty names, an empty token hash, or a token for
// another cluster.
func ValidateAddCluster(c Cluster, tok JoinToken) error {
	switch {
	case c.Name == "" || c.TrustDomain == "":
		return errors.New("empty name or trust domain")
	case tok.Hash == "":
		return errors.New("empty join token hash")
	case tok.Cluster != "" && tok.Cluster != c.Name:
		return fmt.Errorf("join token is for cluster %s", tok.Cluster)
	case tok.Replicas < 0 || tok.Replicas > MaxReplicas:
		return fmt.Errorf("join token for %d replicas: want 1 to %d", tok.Replicas, MaxReplicas)
	}
	return ValidateClusterDNSNames(c.DNSNames)
}
