package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// PutJWTAuthority stores a, or moves the expiry of the stored key with its
// key ID later. It wraps store.ErrAlreadyExists when nothing changed: the
// stored key expires as late or later, or belongs to another cluster.
// Expired keys are dropped on the way.
func (s *Store) PutJWTAuthority(ctx context.Context, a store.JWTAuthority) error {
	if err := s.putJWTAuthority(ctx, a); err != nil {
		return fmt.Errorf("sqlite: put JWT authority %s: %w", a.KeyID, err)
	}
	return nil
}

func (s *Store) putJWTAuthority(ctx context.Context, a store.JWTAuthority) error {
	if err := a.Validate(); err != nil {
		return err
	}
	stored, err := s.pruneThenPut(ctx, sqlq.DeleteExpiredJWTAuthoritiesSQL(sqlq.Question), sqlq.PutJWTAuthoritySQL(sqlq.Question),
		func(now time.Time) []any { return sqlq.JWTAuthorityArgs(a, now) })
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
func (s *Store) JWTAuthorities(ctx context.Context, now time.Time) ([]store.JWTAuthority, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: JWT authorities: %w", store.ErrClosed)
	}
	out, err := collect(ctx, s.r, sqlq.ScanJWTAuthority, sqlq.JWTAuthoritiesSQL(sqlq.Question), now.Unix())
	if err != nil {
		return nil, fmt.Errorf("sqlite: JWT authorities: %w", err)
	}
	return out, nil
}
