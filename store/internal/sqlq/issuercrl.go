package sqlq

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
)

// DeleteExpiredIssuerCRLsSQL drops the CRLs of issuers expired at the
// argument (Unix seconds).
func DeleteExpiredIssuerCRLsSQL(ph Placeholder) string {
	return `DELETE FROM issuer_crls WHERE issuer_not_after <= ` + ph(1)
}

// PutIssuerCRLSQL inserts an issuer CRL, or replaces the stored one of its
// issuer when the new number is higher and the cluster the same; its
// arguments are IssuerCRLArgs.
func PutIssuerCRLSQL(ph Placeholder) string {
	return `INSERT INTO issuer_crls
		(issuer_serial, cluster, number, der, issuer_chain, issuer_not_after, updated_at)
		VALUES (` + list(ph, 7) + `)
		ON CONFLICT (issuer_serial) DO UPDATE SET number = excluded.number, der = excluded.der,
		issuer_chain = excluded.issuer_chain, updated_at = excluded.updated_at
		WHERE issuer_crls.number < excluded.number AND issuer_crls.cluster = excluded.cluster`
}

// IssuerCRLArgs are PutIssuerCRLSQL's arguments for c, written at now.
func IssuerCRLArgs(c store.IssuerCRL, now time.Time) []any {
	return []any{c.IssuerSerial, c.Cluster, c.Number, c.DER, store.JoinDER(c.IssuerChain), c.IssuerNotAfter.Unix(), now.Unix()}
}

// IssuerCRLsSQL lists the CRLs of issuers unexpired at the argument (Unix
// seconds), by issuer serial, for ScanIssuerCRL.
func IssuerCRLsSQL(ph Placeholder) string {
	return `SELECT issuer_serial, cluster, number, der, issuer_chain, issuer_not_after FROM issuer_crls
		WHERE issuer_not_after > ` + ph(1) + ` ORDER BY issuer_serial`
}

// ScanIssuerCRL reads a row of IssuerCRLsSQL.
func ScanIssuerCRL(sc Scanner) (store.IssuerCRL, error) {
	var c store.IssuerCRL
	var chain []byte
	var notAfter int64
	if err := sc.Scan(&c.IssuerSerial, &c.Cluster, &c.Number, &c.DER, &chain, &notAfter); err != nil {
		return c, err
	}
	c.IssuerNotAfter = store.ExpiresFromUnix(notAfter)
	var err error
	c.IssuerChain, err = store.SplitDER(chain)
	return c, err
}

// PutIssuerCRL stores c as the CRL of its issuer unless the stored one has
// the same or a higher number; then it wraps store.ErrAlreadyExists. Rows
// of expired issuers are dropped on the way.
func (w *Writes) PutIssuerCRL(ctx context.Context, c store.IssuerCRL) error {
	if err := w.putIssuerCRL(ctx, c); err != nil {
		return fmt.Errorf("%s: put issuer CRL %s: %w", w.Backend, c.IssuerSerial, err)
	}
	return nil
}

func (w *Writes) putIssuerCRL(ctx context.Context, c store.IssuerCRL) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := w.checkText([2]string{"issuer serial", c.IssuerSerial}, [2]string{"cluster", c.Cluster}); err != nil {
		return err
	}
	stored, err := w.pruneThenPut(ctx, DeleteExpiredIssuerCRLsSQL(w.Ph), PutIssuerCRLSQL(w.Ph),
		func(now time.Time) []any { return IssuerCRLArgs(c, now) })
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
func (r *Reads) IssuerCRLs(ctx context.Context, now time.Time) ([]store.IssuerCRL, error) {
	return read(r, "issuer CRLs", true, func() ([]store.IssuerCRL, error) {
		return Collect(ctx, r.DB, ScanIssuerCRL, IssuerCRLsSQL(r.Ph), now.Unix())
	})
}
