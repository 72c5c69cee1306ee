package store

import (
	"context"
	"errors"
	"time"
)

// JWTAuthorityStore keeps JWT authorities shared between the replicas of a
// store: root replicas publish the keys issuers hand them through it, and
// the replicas of a standalone issuer share their own (issuer.SharedJWTs).
// Both backends implement it.
type JWTAuthorityStore interface {
	// PutJWTAuthority stores a, or moves the expiry of the stored key with
	// its key ID later when the cluster is the same.
	PutJWTAuthority(ctx context.Context, a JWTAuthority) error
	// JWTAuthorities returns the stored authorities unexpired at now.
	JWTAuthorities(ctx context.Context, now time.Time) ([]JWTAuthority, error)
}

// JWTAuthority is a JWT-SVID verification key an issuer handed to the root
// or a standalone replica made, kept in the store so that every replica
// publishes it (see JWTAuthorityStore) until it expires.
type JWTAuthority struct {
	// KeyID is the key's JWT "kid"; it names the key.
	KeyID string
	// Cluster is the cluster whose issuer published it; TrustDomain is the
	// trust domain whose bundle carries it.
	Cluster, TrustDomain string
	// PublicKey is the key, PKIX DER.
	PublicKey []byte
	// Chain is the key's certificate and the CA certificates above it, DER,
	// nearest first.
	Chain [][]byte
	// ExpiresAt is when the key stops verifying anything; the row is
	// dropped then. Second precision, UTC.
	ExpiresAt time.Time
}

// Validate reports what makes a unfit to store.
func (a JWTAuthority) Validate() error {
	if a.KeyID == "" || a.Cluster == "" || a.TrustDomain == "" || len(a.PublicKey) == 0 || len(a.Chain) == 0 ||
		a.ExpiresAt.IsZero() {
		return errors.New("empty key ID, cluster, trust domain, key, chain or expiry")
	}
	return nil
}
