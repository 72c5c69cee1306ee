package store

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
