package sqlq

import (
	"time"

	"github.com/meshca/meshca/store"
)

// RevocationColumns is the column list ScanRevocation reads.
const RevocationColumns = `id, kind, value, cluster, reason, revoked_by, revoked_at, expires_at`

// ScanRevocation reads a row of RevocationColumns.
func ScanRevocation(sc Scanner) (store.Revocation, error) {
	var r store.Revocation
	var revoked, expires int64
	if err := sc.Scan(&r.ID, &r.Kind, &r.Value, &r.Cluster, &r.Reason, &r.RevokedBy, &revoked, &expires); err != nil {
		return store.Revocation{}, err
	}
	r.RevokedAt, r.ExpiresAt = FromUnix(revoked), store.ExpiresFromUnix(expires)
	return r, nil
}

// RevocationsSQL lists the entries in force at the second given as its one
// argument, by ID: not lifted, and not expired (stored whole seconds, so
// e > t iff e > floor(t)).
func RevocationsSQL(ph Placeholder) string {
	return `SELECT ` + RevocationColumns + ` FROM revocations
		WHERE lifted_at = 0 AND (expires_at = 0 OR expires_at > ` + ph(1) + `) ORDER BY id`
}

// DeleteLiftedSQL deletes the lifted entry of a kind and value (its two
// arguments), so that a new one may take its place.
func DeleteLiftedSQL(ph Placeholder) string {
	return `DELETE FROM revocations WHERE kind = ` + ph(1) + ` AND value = ` + ph(2) + ` AND lifted_at <> 0`
}

// InsertRevocationSQL inserts an entry unless one of its kind and value
// exists, and returns its ID. Its arguments are RevocationArgs.
func InsertRevocationSQL(ph Placeholder) string {
	return `INSERT INTO revocations
			(kind, value, cluster, reason, revoked_by, revoked_at, expires_at, lifted_at)
			VALUES (` + list(ph, 7) + `, 0) ON CONFLICT (kind, value) DO NOTHING RETURNING id`
}

// RevocationArgs are the arguments of InsertRevocationSQL for r, whose
// ExpiresAt is stored as expires.
func RevocationArgs(r store.Revocation, expires int64) []any {
	return []any{r.Kind, r.Value, r.Cluster, r.Reason, r.RevokedBy, r.RevokedAt.Unix(), expires}
}

// LiftSQL marks the entry of a kind and value in force lifted at a second
// and returns its cluster, reason, author and revocation time. Its
// arguments are the second (never 0: lifted_at stays non-zero, which is
// what marks the entry lifted, whatever the clock), the kind and the value.
func LiftSQL(ph Placeholder) string {
	return `UPDATE revocations SET lifted_at = ` + ph(1) + `
			WHERE kind = ` + ph(2) + ` AND value = ` + ph(3) + ` AND lifted_at = 0
			RETURNING cluster, reason, revoked_by, revoked_at`
}

// PrepareRevocation returns r as it is stored, RevokedAt now when zero and
// both times at whole seconds in UTC, and its ExpiresAt as stored.
func PrepareRevocation(r store.Revocation, now time.Time) (store.Revocation, int64) {
	if r.RevokedAt.IsZero() {
		r.RevokedAt = now
	}
	r.RevokedAt = FromUnix(r.RevokedAt.Unix())
	expires := store.ExpiresUnix(r.ExpiresAt)
	r.ExpiresAt = store.ExpiresFromUnix(expires)
	return r, expires
}

// list is the placeholders of n arguments from the first: "?, ?" or "$1, $2".
func list(ph Placeholder, n int) string {
	var b []byte
	for i := 1; i <= n; i++ {
		if i > 1 {
			b = append(b, ", "...)
		}
		b = append(b, ph(i)...)
	}
	return string(b)
}
