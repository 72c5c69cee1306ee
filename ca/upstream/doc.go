// Package upstream obtains meshca's CA certificate from an existing PKI
// instead of self-signing it, through smallstep's certificate authority
// services (github.com/smallstep/certificates/cas/apiv1): step-ca
// ("stepcas", a JWK or X5C provisioner) and Google Cloud CAS ("cloudcas"),
// and through meshca's own adapter of the same apiv1 calls, a Vault PKI
// secrets engine ("vaultpki", pki/issuer/REF/sign-intermediate).
//
// The CA key never leaves meshca: the caller hands Issue a crypto.Signer
// (a key file, or a Vault Transit key), Issue makes a CSR with it and asks
// the upstream to sign a CA certificate for it. What comes back is checked
// before it is returned (Issued): a CA certificate for exactly that key,
// usable for certificate signing, with a path length that leaves room for
// the cluster intermediates below it, valid now for long enough, and
// chaining through the upstream's intermediates to the upstream's root,
// every upstream CA above it allowing the CAs below it. The upstream root
// is the trust anchor relying parties use; meshca's CA is an intermediate
// under it.
//
// Vault PKI through smallstep's "vaultcas" is refused by Config.Validate:
// vaultcas signs with Vault's pki/sign/ROLE endpoint, and Vault never makes
// a CA certificate there (only the sign-intermediate endpoints do, which
// vaultcas does not call). "vaultpki" calls them, logged in as meshca's
// Vault Transit keys are (ca/vault.Client).
package upstream
