package store

import "context"

// StandaloneRootStore records which root a standalone issuer (one whose
// root key is kept in files, not behind a root service) serves under, per
// trust domain and cluster, so that every replica on one store serves
// under one root. Both backends implement it. A recorded root is never
// replaced.
type StandaloneRootStore interface {
	// PinStandaloneRoot records fingerprint (lower-case hex SHA-256 of the
	// root's DER) as the root of the trust domain's cluster, unless a root
	// is recorded for it already, and returns the recorded one: ours if we
	// were first, the earlier one otherwise (then nothing is written).
	// Concurrent calls agree on one fingerprint. It appends no audit event:
	// like creating the root's files, recording it issues nothing, and the
	// row keeps when it was recorded.
	PinStandaloneRoot(ctx context.Context, trustDomain, cluster, fingerprint string) (string, error)
	// StandaloneRoot returns the recorded fingerprint, or an error wrapping
	// ErrNotFound if none is recorded.
	StandaloneRoot(ctx context.Context, trustDomain, cluster string) (string, error)
}
