package store

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"time"
)

// RootCRL is the current CRL of one root. The replica that holds the leader
// lease signs it and stores it; every replica publishes the stored one, so
// that all of them serve the same CRL under the same number.
type RootCRL struct {
	// RootFingerprint is the lower-case hex SHA-256 of the root's DER.
	RootFingerprint string
	// Number is the CRL number; a stored CRL is only ever replaced by one
	// with a higher number.
	Number int64
	DER    []byte
}

// IssuerCRL is the newest CRL an issuer published to the root, kept in the
// store so that every root replica relays it (see ReplicaStore in
// ca/root).
type IssuerCRL struct {
	// IssuerSerial is the lower-case hex serial of the intermediate that
	// signed the CRL.
	IssuerSerial string
	Cluster      string
	// Number is the CRL number; a stored CRL is only ever replaced by one
	// with a higher number.
	Number int64
	DER    []byte
	// IssuerChain is the intermediate and what it chains through, DER, the
	// intermediate first.
	IssuerChain [][]byte
	// IssuerNotAfter is when the intermediate expires; the row is dropped
	// then. Second precision, UTC.
	IssuerNotAfter time.Time
}

// IssuerCRLStore keeps the newest CRL of each intermediate, shared between
// the replicas of a store: root replicas relay the CRLs issuers publish
// through it, and the replicas of a standalone issuer share their own
// (issuer.SharedCRLs). Both backends implement it.
type IssuerCRLStore interface {
	// PutIssuerCRL stores c unless the stored CRL of its intermediate has
	// the same or a higher number (then it fails with an error wrapping
	// ErrAlreadyExists).
	PutIssuerCRL(ctx context.Context, c IssuerCRL) error
	// IssuerCRLs returns the stored CRLs of intermediates unexpired at now.
	IssuerCRLs(ctx context.Context, now time.Time) ([]IssuerCRL, error)
}

// Validate reports what makes c unfit to store.
func (c IssuerCRL) Validate() error {
	if c.IssuerSerial == "" || c.Cluster == "" || len(c.DER) == 0 || c.Number <= 0 || len(c.IssuerChain) == 0 ||
		c.IssuerNotAfter.IsZero() {
		return errors.New("empty issuer serial, cluster, CRL, number, issuer chain or issuer expiry")
	}
	return nil
}

// JoinDER concatenates DER certificates, as IssuerChain is stored.
func JoinDER(ders [][]byte) []byte { return bytes.Join(ders, nil) }

// SplitDER splits concatenated DER certificates.
func SplitDER(b []byte) ([][]byte, error) {
	certs, err := x509.ParseCertificates(b)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out, nil
}
