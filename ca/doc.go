// Package ca holds meshca's certificate authorities: a root CA on any
// crypto.Signer (a key file by default, Vault Transit in production),
// name-constrained per-cluster intermediates, leaf signing and the trust
// bundle. It never talks to workloads; policy lives in the issuer.
package ca
