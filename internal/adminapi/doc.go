// Package admin is the plumbing the root and the issuers share for their
// admin APIs: the Unix admin socket, whose audit actor is the peer's Unix
// user; admin over mutual TLS for configured admin SPIFFE IDs holding
// certificates signed directly by a root; the names of callers; the
// store-backed read calls (Reads); and the mapping of admin errors to gRPC
// statuses (Status).
package adminapi
