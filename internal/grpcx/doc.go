// Package grpcx is the gRPC plumbing every meshca server shares: one error
// vocabulary and the one place its errors become gRPC statuses (Mapper),
// serving with a bounded graceful stop (Serve, Stop), and the caller's
// address for logs (PeerAddr).
//
// Service code wraps a class from this package with %w around the reason
// ("%w: cluster %s is revoked", grpcx.ErrFailedPrecondition); a server's
// Mapper turns the error into a status at the edge of each call, logs the
// full reason, and tells the caller only what is safe: the text of the
// caller's own faults, opaque messages for authentication failures and for
// our own.
package grpcx
