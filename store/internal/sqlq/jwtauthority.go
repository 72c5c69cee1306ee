package sqlq

import (
	"time"

	"github.com/meshca/meshca/store"
)

// DeleteExpiredJWTAuthoritiesSQL drops the JWT authorities expired at the
// argument (Unix seconds).
func DeleteExpiredJWTAuthoritiesSQL(ph Placeholder) string {
	return `DELETE FROM jwt_authorities WHERE expires_at <= ` + ph(1)
}

// PutJWTAuthoritySQL inserts a JWT authority, or moves the expiry of the
// stored one with its key ID later when the cluster is the same; its
// arguments are JWTAuthorityArgs. Nothing else of a stored key changes.
func PutJWTAuthoritySQL(ph Placeholder) string {
	return `INSERT INTO jwt_authorities
		(key_id, cluster, trust_domain, public_key, chain, expires_at, updated_at)
		VALUES (` + list(ph, 7) + `)
		ON CONFLICT (key_id) DO UPDATE SET expires_at = excluded.expires_at, updated_at = excluded.updated_at
		WHERE jwt_authorities.expires_at < excluded.expires_at AND jwt_authorities.cluster = excluded.cluster`
}

// JWTAuthorityArgs are PutJWTAuthoritySQL's arguments for a, written at now.
func JWTAuthorityArgs(a store.JWTAuthority, now time.Time) []any {
	return []any{a.KeyID, a.Cluster, a.TrustDomain, a.PublicKey, store.JoinDER(a.Chain), a.ExpiresAt.Unix(), now.Unix()}
}

// JWTAuthoritiesSQL lists the JWT authorities unexpired at the argument
// (Unix seconds), by key ID, for ScanJWTAuthority.
func JWTAuthoritiesSQL(ph Placeholder) string {
	return `SELECT key_id, cluster, trust_domain, public_key, chain, expires_at FROM jwt_authorities
		WHERE expires_at > ` + ph(1) + ` ORDER BY key_id`
}

// ScanJWTAuthority reads a row of JWTAuthoritiesSQL.
func ScanJWTAuthority(sc Scanner) (store.JWTAuthority, error) {
	var a store.JWTAuthority
	var chain []byte
	var expires int64
	if err := sc.Scan(&a.KeyID, &a.Cluster, &a.TrustDomain, &a.PublicKey, &chain, &expires); err != nil {
		return a, err
	}
	a.ExpiresAt = store.ExpiresFromUnix(expires)
	var err error
	a.Chain, err = store.SplitDER(chain)
	return a, err
}
