package issuer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxCSRBytes bounds the PEM CSR a caller may send. Real CSRs are well under
// 2 KiB (RSA-4096 included); the limit keeps parsing cost bounded.
const MaxCSRBytes = 16 << 10

// maxRSABits bounds RSA keys so that a caller cannot make us spend seconds on
// a signature check.
const maxRSABits = 8192

// CheckCSR parses a PEM certificate signing request and applies meshca's
// strict rules for a workload that attested as id:
//
//   - exactly one CERTIFICATE REQUEST block, at most MaxCSRBytes, nothing after it;
//   - a valid self-signature;
//   - key ECDSA P-256/P-384, RSA 2048..8192 bits, or Ed25519;
//   - URI SANs empty or exactly id;
//   - no DNS, IP or email SANs and no subject common name.
//
// Errors wrap ErrInvalidRequest, except a well-formed SPIFFE ID other than
// id or a DNS name, which wrap ErrPermissionDenied. The certificate meshca
// issues takes its names from the attested identity, never from the CSR:
// the CSR contributes only its public key.
func CheckCSR(pemCSR []byte, id spiffeid.ID) (*x509.CertificateRequest, error) {
	return checkCSR(pemCSR, id, nil)
}

// checkCSR is CheckCSR for an identity that may have the DNS names in
// allowed (see DNSGrant): the CSR's DNS SANs, if any, must each be one of
// them, without repeats; they are the only names taken from the CSR.
func checkCSR(pemCSR []byte, id spiffeid.ID, allowed []string) (*x509.CertificateRequest, error) {
	if len(pemCSR) == 0 {
		return nil, fmt.Errorf("%w: csr is empty", ErrInvalidRequest)
	}
	if len(pemCSR) > MaxCSRBytes {
		return nil, fmt.Errorf("%w: csr is %d bytes; the limit is %d", ErrInvalidRequest, len(pemCSR), MaxCSRBytes)
	}
	block, rest := pem.Decode(pemCSR)
	if block == nil {
		return nil, fmt.Errorf("%w: csr is not PEM encoded", ErrInvalidRequest)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: csr PEM block is %q, want CERTIFICATE REQUEST", ErrInvalidRequest, block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: csr has data after the PEM block", ErrInvalidRequest)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: parse csr: %v", ErrInvalidRequest, err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: csr signature is invalid: %v", ErrInvalidRequest, err)
	}
	if err := checkNames(csr, id, allowed); err != nil {
		return nil, err
	}
	return csr, nil
}

func checkKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if c := k.Curve; c != elliptic.P256() && c != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s is not allowed (use P-256 or P-384)", ErrInvalidRequest, c.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > maxRSABits {
			return fmt.Errorf("%w: RSA key of %d bits is not allowed (use 2048 to %d bits)", ErrInvalidRequest, n, maxRSABits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: public key type %T is not allowed (use ECDSA P-256/P-384, RSA >= 2048 or Ed25519)", ErrInvalidRequest, pub)
	}
	return nil
}

func checkNames(csr *x509.CertificateRequest, id spiffeid.ID, allowed []string) error {
	if err := checkDNSNames(csr.DNSNames, id, allowed); err != nil {
		return err
	}
	switch {
	case csr.Subject.CommonName != "":
		return fmt.Errorf("%w: csr must not have a subject common name (got %q)", ErrInvalidRequest, csr.Subject.CommonName)
	case len(csr.IPAddresses) > 0:
		return fmt.Errorf("%w: csr must not have IP SANs (got %v)", ErrInvalidRequest, csr.IPAddresses)
	case len(csr.EmailAddresses) > 0:
		return fmt.Errorf("%w: csr must not have email SANs (got %q)", ErrInvalidRequest, csr.EmailAddresses)
	case len(csr.URIs) > 1:
		return fmt.Errorf("%w: csr has %d URI SANs; at most one (the workload's SPIFFE ID) is allowed", ErrInvalidRequest, len(csr.URIs))
	case len(csr.URIs) == 0:
		return nil
	}
	got, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return fmt.Errorf("%w: csr URI SAN %q is not a SPIFFE ID: %v", ErrInvalidRequest, csr.URIs[0], err)
	}
	if got != id {
		return fmt.Errorf("%w: csr asks for %s but the caller attested as %s", ErrPermissionDenied, got, id)
	}
	return nil
}

// checkDNSNames refuses DNS SANs that id may not have: any, unless allowed
// lists them all. The refusal names what the caller asked for, never what
// the issuer would allow.
func checkDNSNames(names []string, id spiffeid.ID, allowed []string) error {
	if len(names) == 0 {
		return nil
	}
	if len(allowed) == 0 {
		return fmt.Errorf("%w: %s may not have DNS names in its certificate (csr asks for %q)", ErrPermissionDenied, id, names)
	}
	if len(names) > len(allowed) {
		return fmt.Errorf("%w: csr asks for %d DNS names; %s may not have that many", ErrPermissionDenied, len(names), id)
	}
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("%w: csr asks for DNS name %q twice", ErrInvalidRequest, n)
		}
		if !slices.Contains(allowed, n) {
			return fmt.Errorf("%w: %s may not have DNS name %q in its certificate", ErrPermissionDenied, id, n)
		}
	}
	return nil
}
