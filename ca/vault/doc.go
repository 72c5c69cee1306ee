// Package vault provides a crypto.Signer whose private key is a HashiCorp
// Vault (or OpenBao) Transit key, for meshca's root CA:
//
//	signer, err := vault.New(ctx, vault.Config{
//		Address: "https://vault.vault.svc:8200",
//		KeyName: "meshca-root",
//		Auth: vault.AuthConfig{Method: vault.AuthKubernetes,
//			Kubernetes: vault.KubernetesConfig{Role: "meshca-root"}},
//	})
//	...
//	defer signer.Close()
//	root, err := ca.NewRoot(ca.RootConfig{Signer: signer})
//
// The key never leaves Vault. New creates it when it is missing with
// exportable=false and allow_plaintext_backup=false, and refuses an existing
// key that is exportable, allows plaintext backup, or is not of the
// configured type (ECDSA P-256 or P-384, RSA 2048, 3072 or 4096). Only the
// "sign" operation is used after start-up; the Vault policy needs:
//
//	path "transit/keys/meshca-root" { capabilities = ["read", "create", "update"] }
//	path "transit/sign/meshca-root" { capabilities = ["update"] }
//
// ("create" and "update" on transit/keys only when meshca creates the key.)
//
// Sign sends the digest prehashed, names the hash from the SignerOpts, asks
// for ASN.1 ECDSA signatures and, for RSA, PSS when the opts are
// *rsa.PSSOptions and PKCS #1 v1.5 otherwise. It pins the key version
// whose public key New fetched, so rotating the key in Vault does not
// change this signer, and verifies every signature locally before
// returning it.
//
// Authentication is by token (inline or a file, e.g. written by Vault
// Agent), AppRole (role ID and a secret-ID file) or Kubernetes (role and a
// projected service-account token file). A background loop renews the token
// with a LifetimeWatcher and logs in again before it expires; a call that
// Vault rejects with 403 logs in again once and is retried, so an expired
// or revoked token costs nothing but a round trip. Files are re-read at
// every login.
//
// Errors wrap ErrSealed, ErrUnreachable or ErrPermissionDenied when one of
// them is the cause; nothing is retried silently beyond Config.MaxRetries,
// and every call is bounded by Config.Timeout. A sealed or unreachable
// Vault makes calls fail; they succeed again once Vault is back, with the
// same Signer. Tokens and secret IDs are never logged.
package vault
