package sqlq

import (
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
