package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

var _ store.RevocationStore = (*Store)(nil)

// keepCertificatesRevoked turns the lifted revocation of SPIFFE ID id into
// one serial revocation per certificate of id recorded before the lift and
// not expired at now (of the revocation's cluster, or of every cluster when
// it has none), each with the lifted one's reason, author and time, ending
// when the certificate expires. Lifting only lets id get new certificates:
// a revoked key stays revoked, and the certificates recorded after the
// lift, which these statements cannot see, are not affected.
//
// A lifted revocation of one of those serials is deleted first, as Revoke
// does; one in force is kept as it is.
func keepCertificatesRevoked(ctx context.Context, tx sqlq.Querier, id string, lifted store.Revocation, now time.Time) error {
	const certs = `SELECT serial FROM certificates
		WHERE spiffe_id = $1::text AND ($2::text = '' OR cluster = $2::text) AND not_after > $3::bigint`
	if _, err := tx.Exec(ctx, `DELETE FROM revocations
		WHERE kind = 'serial' AND lifted_at <> 0 AND value IN (`+certs+`)`,
		id, lifted.Cluster, now.Unix()); err != nil {
		return fmt.Errorf("delete lifted serial revocations: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO revocations
		(kind, value, cluster, reason, revoked_by, revoked_at, expires_at, lifted_at)
		SELECT 'serial', serial, cluster, $4::text, $5::text, $6::bigint, not_after, 0 FROM certificates
		WHERE spiffe_id = $1::text AND ($2::text = '' OR cluster = $2::text) AND not_after > $3::bigint
		ORDER BY not_after, serial
		ON CONFLICT (kind, value) DO NOTHING`,
		id, lifted.Cluster, now.Unix(), lifted.Reason, lifted.RevokedBy, lifted.RevokedAt.Unix()); err != nil {
		return fmt.Errorf("keep the certificates of %s revoked: %w", id, err)
	}
	return nil
}
