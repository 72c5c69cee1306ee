package attest

import "errors"

// Failure reasons. An attestation error that wraps ErrUnauthenticated may
// also match one of these under errors.Is, so that callers can count
// failures by a small, fixed set of reasons; one that matches none is a
// token that is invalid in some other way (malformed, bad signature, wrong
// issuer or subject, pod gone).
var (
	// ErrExpired: the token is expired, not yet valid or issued in the
	// future.
	ErrExpired = errors.New("token expired or not yet valid")
	// ErrAudience: the token is not meant for this issuer.
	ErrAudience = errors.New("token audience not accepted")
	// ErrUnknownCluster: the request names a cluster the attestor does not
	// serve.
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrNotAllowed: the identity is authenticated but the attestation
	// policy refuses it.
	ErrNotAllowed = errors.New("identity not allowed by policy")
)

// because returns err, with its text, also matching reason under errors.Is.
func because(reason, err error) error { return reasoned{err, reason} }

type reasoned struct{ err, reason error }

func (r reasoned) Error() string   { return r.err.Error() }
func (r reasoned) Unwrap() []error { return []error{r.err, r.reason} }
