package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/meshca/meshca/trust"
)

// SignTrustBundle signs b's Digest with signer, the key of the root
// signerCert, and sets b.Signature and b.Signer. The hash follows the key
// (see trust.TrustBundle.SignedMessage). signer may be remote (Vault
// Transit): only its Sign method is used. The signature is verified before
// SignTrustBundle returns; on error b is unchanged. It modifies b, so call it
// before b is shared.
func SignTrustBundle(b *trust.TrustBundle, signer crypto.Signer, signerCert *x509.Certificate) error {
	if signer == nil || signerCert == nil {
		return errors.New("sign trust bundle: signer and its certificate are required")
	}
	if !publicKeysEqual(signer.Public(), signerCert.PublicKey) {
		return errors.New("sign trust bundle: the key does not belong to the certificate")
	}
	msg, opts, err := b.SignedMessage(signerCert.PublicKey)
	if err != nil {
		return fmt.Errorf("sign trust bundle: %w", err)
	}
	sig, err := signer.Sign(rand.Reader, msg, opts)
	if err != nil {
		return fmt.Errorf("sign trust bundle: %w", err)
	}
	if err := b.CheckSignatureFrom(signerCert.PublicKey, sig); err != nil {
		return fmt.Errorf("sign trust bundle: the new signature does not verify: %w", err)
	}
	b.Signature, b.Signer = sig, trust.Fingerprint(signerCert)
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
