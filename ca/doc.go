// Package ca is meshca's signing core: a root CA on any crypto.Signer (a key
// file by default, Vault Transit in production), name-constrained
// per-cluster intermediates, leaf certificates, CRLs and trust-bundle
// signatures. It never talks to workloads and applies no issuance policy
// (the issuer does). What a relying party needs to check what ca signs
// (bundles, CRLs, trust-bundle signatures, server identities) lives in
// package trust, which ca builds on and which never imports ca; the agent
// links trust only.
package ca
