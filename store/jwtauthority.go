package store

import (
	"errors"
	"time"
)

// JWTAuthority is a JWT-SVID verification key an issuer handed to the root,
// kept in the store so that every root replica publishes it (see
// ReplicaStore in ca/root) until it expires.
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
