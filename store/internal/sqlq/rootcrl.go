package sqlq

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshca/meshca/store"
)

// PutRootCRL stores c as the CRL of its root unless the stored one has the
// same or a higher number; then it wraps store.ErrAlreadyExists.
func (w *Writes) PutRootCRL(ctx context.Context, c store.RootCRL) error {
	if err := w.putRootCRL(ctx, c); err != nil {
		return fmt.Errorf("%s: put root CRL %s: %w", w.Backend, c.RootFingerprint, err)
	}
	return nil
}

func (w *Writes) putRootCRL(ctx context.Context, c store.RootCRL) error {
	if c.RootFingerprint == "" || len(c.DER) == 0 || c.Number <= 0 {
		return errors.New("empty fingerprint, CRL or number")
	}
	return w.Direct(func(q Querier) error {
		n, err := q.Exec(ctx, `INSERT INTO root_crls (root_fingerprint, number, der, updated_at) VALUES (`+list(w.Ph, 4)+`)
		ON CONFLICT (root_fingerprint) DO UPDATE SET number = excluded.number, der = excluded.der, updated_at = excluded.updated_at
		WHERE root_crls.number < excluded.number`, c.RootFingerprint, c.Number, c.DER, w.Now().Unix())
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("a CRL numbered %d or higher is stored: %w", c.Number, store.ErrAlreadyExists)
		}
		return nil
	})
}

// RootCRLs returns the stored root CRLs by root fingerprint.
func (r *Reads) RootCRLs(ctx context.Context) ([]store.RootCRL, error) {
	return read(r, "root CRLs", true, func() ([]store.RootCRL, error) {
		return Collect(ctx, r.DB, func(sc Scanner) (store.RootCRL, error) {
			var c store.RootCRL
			err := sc.Scan(&c.RootFingerprint, &c.Number, &c.DER)
			return c, err
		}, `SELECT root_fingerprint, number, der FROM root_crls ORDER BY root_fingerprint`)
	})
}
