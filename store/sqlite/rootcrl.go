package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// PutRootCRL stores c as the CRL of its root unless the stored one has the
// same or a higher number; then it wraps store.ErrAlreadyExists.
func (s *Store) PutRootCRL(ctx context.Context, c store.RootCRL) error {
	if err := s.putRootCRL(ctx, c); err != nil {
		return fmt.Errorf("sqlite: put root CRL %s: %w", c.RootFingerprint, err)
	}
	return nil
}

func (s *Store) putRootCRL(ctx context.Context, c store.RootCRL) error {
	if c.RootFingerprint == "" || len(c.DER) == 0 || c.Number <= 0 {
		return errors.New("empty fingerprint, CRL or number")
	}
	s.direct.RLock()
	defer s.direct.RUnlock()
	if s.closed.Load() {
		return store.ErrClosed
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO root_crls (root_fingerprint, number, der, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (root_fingerprint) DO UPDATE SET number = excluded.number, der = excluded.der, updated_at = excluded.updated_at
		WHERE root_crls.number < excluded.number`, c.RootFingerprint, c.Number, c.DER, s.now().Unix())
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("a CRL numbered %d or higher is stored: %w", c.Number, store.ErrAlreadyExists)
	}
	return nil
}

// RootCRLs returns the stored root CRLs by root fingerprint.
func (s *Store) RootCRLs(ctx context.Context) ([]store.RootCRL, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: root CRLs: %w", store.ErrClosed)
	}
	out, err := collect(ctx, s.r, func(sc sqlq.Scanner) (store.RootCRL, error) {
		var c store.RootCRL
		err := sc.Scan(&c.RootFingerprint, &c.Number, &c.DER)
		return c, err
	}, `SELECT root_fingerprint, number, der FROM root_crls ORDER BY root_fingerprint`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: root CRLs: %w", err)
	}
	return out, nil
}

// PutIssuerCRL stores c as the CRL of its issuer unless the stored one has
// the same or a higher number; then it wraps store.ErrAlreadyExists. Rows
// of expired issuers are dropped on the way.
func (s *Store) PutIssuerCRL(ctx context.Context, c store.IssuerCRL) error {
	if err := s.putIssuerCRL(ctx, c); err != nil {
		return fmt.Errorf("sqlite: put issuer CRL %s: %w", c.IssuerSerial, err)
	}
	return nil
}

func (s *Store) putIssuerCRL(ctx context.Context, c store.IssuerCRL) error {
	if err := c.Validate(); err != nil {
		return err
	}
	stored, err := s.pruneThenPut(ctx, sqlq.DeleteExpiredIssuerCRLsSQL(sqlq.Question), sqlq.PutIssuerCRLSQL(sqlq.Question),
		func(now time.Time) []any { return sqlq.IssuerCRLArgs(c, now) })
	if err != nil {
		return err
	}
	if !stored {
		return fmt.Errorf("a CRL numbered %d or higher is stored: %w", c.Number, store.ErrAlreadyExists)
	}
	return nil
}

// IssuerCRLs returns the stored CRLs of issuers that have not expired at
// now, by issuer serial.
func (s *Store) IssuerCRLs(ctx context.Context, now time.Time) ([]store.IssuerCRL, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: issuer CRLs: %w", store.ErrClosed)
	}
	out, err := collect(ctx, s.r, sqlq.ScanIssuerCRL, sqlq.IssuerCRLsSQL(sqlq.Question), now.Unix())
	if err != nil {
		return nil, fmt.Errorf("sqlite: issuer CRLs: %w", err)
	}
	return out, nil
}

// pruneThenPut drops the rows that expired by now (prune, with now's Unix
// seconds as its argument), then runs put, a conditional upsert, with
// args(now). stored is false when put changed no row: the stored row wins.
func (s *Store) pruneThenPut(ctx context.Context, prune, put string, args func(time.Time) []any) (stored bool, err error) {
	s.direct.RLock()
	defer s.direct.RUnlock()
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	now := s.now()
	if _, err := s.w.ExecContext(ctx, prune, now.Unix()); err != nil {
		return false, err
	}
	res, err := s.w.ExecContext(ctx, put, args(now)...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return err == nil && n > 0, nil
}
