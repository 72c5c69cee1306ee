package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

var _ store.RevocationStore = (*Store)(nil)

// Revocation writes are rare (an administrator acts), so, like the
// RootStore writes, each runs a transaction of its own through writeTx.
//
// For writes an entry is in force until it is lifted (lifted_at = 0), so
// Revoke and Unrevoke do not depend on any clock; one whose ExpiresAt has
// passed still counts, it is only left out of Revocations.

// Revoke records r with ev in one transaction and returns r as stored: ID
// set, RevokedAt (the store's now when zero) and ExpiresAt at whole seconds
// in UTC. An entry of the same kind and value not lifted, even one that has
// expired, wraps store.ErrAlreadyExists and writes nothing. One that was
// lifted is replaced: its row goes and r gets a new ID, larger than every ID
// assigned before, so that whoever tracks the largest ID seen also sees it
// come back. The lifted entry's history is in the audit log.
//
// Of concurrent revocations of one kind and value, from any number of
// processes, exactly one succeeds: the others wait on the row (or the
// unique index entry) the first one wrote, then find it in force.
func (s *Store) Revoke(ctx context.Context, r store.Revocation, ev store.AuditEvent) (store.Revocation, error) {
	out, err := s.revoke(ctx, r, ev)
	if err != nil {
		return store.Revocation{}, fmt.Errorf("postgres: revoke %s %s: %w", r.Kind, r.Value, err)
	}
	return out, nil
}

func (s *Store) revoke(ctx context.Context, r store.Revocation, ev store.AuditEvent) (store.Revocation, error) {
	if err := r.Validate(); err != nil {
		return store.Revocation{}, err
	}
	if err := checkText([][2]string{{"value", r.Value}, {"cluster", r.Cluster}, {"reason", r.Reason},
		{"revoked by", r.RevokedBy}}); err != nil {
		return store.Revocation{}, err
	}
	now := s.now()
	ev = sqlq.WithTime(ev, now)
	r, expires := sqlq.PrepareRevocation(r, now)
	err := s.writeTx(ctx, &ev, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		r, err = sqlq.InsertRevocation(ctx, on{tx}, sqlq.Dollar, r, expires)
		return err
	})
	if err != nil {
		return store.Revocation{}, err
	}
	return r, nil
}

// Unrevoke lifts the entry of kind and value not lifted yet (expired or
// not), with ev, in one transaction. None wraps store.ErrNotFound and
// writes nothing. Lifting a SPIFFE ID keeps its certificates revoked: see
// keepCertificatesRevoked.
func (s *Store) Unrevoke(ctx context.Context, kind, value string, ev store.AuditEvent) error {
	if err := s.unrevoke(ctx, kind, value, ev); err != nil {
		return fmt.Errorf("postgres: unrevoke %s %s: %w", kind, value, err)
	}
	return nil
}

func (s *Store) unrevoke(ctx context.Context, kind, value string, ev store.AuditEvent) error {
	if err := store.ValidateRevocationTarget(kind, value); err != nil {
		return err
	}
	if err := checkText([][2]string{{"value", value}}); err != nil {
		return err
	}
	now := s.now()
	ev = sqlq.WithTime(ev, now)
	return s.writeTx(ctx, &ev, func(ctx context.Context, tx pgx.Tx) error {
		// Of two concurrent lifts the second waits for the first's row
		// lock, then re-checks lifted_at and matches nothing.
		lifted, err := sqlq.Lift(ctx, on{tx}, sqlq.Dollar, kind, value, now)
		if err != nil || kind != store.RevokeSPIFFEID {
			return err
		}
		return keepCertificatesRevoked(ctx, tx, value, lifted, now)
	})
}

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
func keepCertificatesRevoked(ctx context.Context, tx pgx.Tx, id string, lifted store.Revocation, now time.Time) error {
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
