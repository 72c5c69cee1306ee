// Package root is the central root CA behind `meshca root serve`. It
// keeps the roots (their keys behind Keys: files or Vault Transit, their
// records in the store), decides from the records and the clock which root
// is prepared, active or retiring, publishes the trust bundle, rotates the
// root on a schedule or on request, and serves three gRPC services:
// RootService (enrolment and renewal of cluster issuers, and their CRLs) and
// BundleService over TLS, AdminService on a Unix socket.
//
// A root is self-signed, or under an upstream PKI (Config.Upstream,
// upstream.go) a CA certificate the upstream issues for the root's key:
// then the upstream's root is the bundle's trust anchor (Roots) and
// meshca's CAs its Authorities, which every "signed directly by a root"
// check uses; renewal is the usual rotation, retried with backoff while
// the upstream fails.
//
// Revocation on the root is of whole clusters (AdminService.Revoke with a
// cluster): the cluster and its unexpired intermediates enter the store's
// deny-list, its issuer can no longer enrol, renew or publish CRLs
// (PermissionDenied), and every in-bundle root whose key loads signs a CRL
// of the revoked intermediates, carried in every own trust domain of the
// bundle. It cannot be undone: the cluster enrols again under a new name.
// Certificates the root signed itself (admin certificates, issuer
// credentials) are revoked by serial (AdminService.Revoke with a serial):
// the deny-list refuses them at once and the root CRLs list them. Workload
// certificates and SPIFFE IDs are revoked on the issuers' admin sockets.
//
// Admin certificates (AdminService.IssueAdminCredential, on the Unix
// socket only) are client-only X509-SVIDs signed directly by the active
// root, recorded and audited; the admin API over mutual TLS accepts nothing
// else, so no cluster issuer can mint an admin.
//
// Issuer credentials form one lineage per cluster: every Renew replaces the
// caller's credential, and the root accepts only the newest one (and the
// one it replaced, until the newest is used); any other credential of the
// cluster is a copy in use, which revokes the lineage (credential.go).
// Issuers hand their own CRLs and JWT-SVID keys to PublishCRLs; the root
// verifies them, stores them for its other replicas (issuercrls.go,
// jwtauthorities.go) and relays them to every cluster in their trust
// domain's entry, each JWT key until it expires.
//
// Use: New, then run Run (the re-evaluation loop), Serve and ServeAdmin
// side by side until the context ends; Close releases the keys afterwards.
package root
