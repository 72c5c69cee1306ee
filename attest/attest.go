// Package attest turns a workload's credential (a projected Kubernetes
// service-account token) into an attested identity. It never signs anything.
//
// Every attestor implements [Attestor]. Attestation failures of any kind wrap
// [ErrUnauthenticated] (the caller sees an opaque error, the log gets the
// wrapped reason) or [ErrUnavailable] when the attestor could not reach what it
// needs to decide (an API server, a JWKS endpoint): callers must fail closed.
package attest

import (
	"context"
	"errors"
	"time"
)

// ErrUnauthenticated is wrapped by every error that means "this credential does
// not prove an identity". The wrapping text is for logs only.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrUnavailable is wrapped by errors that mean the attestor could not decide
// (for example the API server is down). Callers must not issue anything.
var ErrUnavailable = errors.New("attestation unavailable")

// Request is what a caller presents.
type Request struct {
	// Token is the bearer token, without the "Bearer " prefix.
	Token string
	// ClusterID names the cluster the token claims to come from. Empty means
	// the attestor's local cluster.
	ClusterID string
}

// Identity is an attested Kubernetes workload identity.
type Identity struct {
	// Cluster is the cluster the identity was attested in.
	Cluster string
	// Namespace and ServiceAccount are always set on success.
	Namespace      string
	ServiceAccount string
	// PodName and PodUID are set when the token was bound to a pod.
	PodName string
	PodUID  string
	// Expiry is when the credential stops being valid; results must not be
	// cached past it. Zero means unknown.
	Expiry time.Time
}

// Attestor verifies a credential. Implementations are safe for concurrent use.
type Attestor interface {
	Attest(ctx context.Context, req Request) (Identity, error)
}
