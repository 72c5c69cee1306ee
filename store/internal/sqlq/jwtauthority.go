package sqlq

import (
	"context"
	"fmt"
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

// PutJWTAuthority stores a, or moves the expiry of the stored key with its
// key ID later. It wraps store.ErrAlreadyExists when nothing changed: the
// stored key expires as late or later, or belongs to another cluster.
// Expired keys are dropped on the way.
func (w *Writes) PutJWTAuthority(ctx context.Context, a store.JWTAuthority) error {
	if err := w.putJWTAuthority(ctx, a); err != nil {
		return fmt.Errorf("%s: put JWT authority %s: %w", w.Backend, a.KeyID, err)
	}
	return nil
}

func (w *Writes) putJWTAuthority(ctx context.Context, a store.JWTAuthority) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if err := w.checkText([2]string{"key ID", a.KeyID}, [2]string{"cluster", a.Cluster},
		[2]string{"trust domain", a.TrustDomain}); err != nil {
		return err
	}
	stored, err := w.pruneThenPut(ctx, DeleteExpiredJWTAuthoritiesSQL(w.Ph), PutJWTAuthoritySQL(w.Ph),
		func(now time.Time) []any { return JWTAuthorityArgs(a, now) })
	if err != nil {
		return err
	}
	if !stored {
		return fmt.Errorf("stored already, expiring as late or later or of another cluster: %w", store.ErrAlreadyExists)
	}
	return nil
}

// JWTAuthorities returns the stored JWT authorities unexpired at now, by
// key ID.
func (r *Reads) JWTAuthorities(ctx context.Context, now time.Time) ([]store.JWTAuthority, error) {
	return read(r, "JWT authorities", true, func() ([]store.JWTAuthority, error) {
		return Collect(ctx, r.DB, ScanJWTAuthority, JWTAuthoritiesSQL(r.Ph), now.Unix())
	})
}
