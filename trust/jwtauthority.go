package trust

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// jwtSignerPathPrefix starts the path of the identity a JWT authority's
// certificate names. No workload identity has it: workloads are named
// /ns/NAMESPACE/sa/ACCOUNT.
const jwtSignerPathPrefix = "/meshca/jwt/"

// JWTAuthority is one key that verifies a trust domain's JWT-SVIDs.
//
// For the root's own trust domains an authority authenticates itself, as a
// CRL does: Chain holds the X.509 certificate of PublicKey, issued by a
// cluster intermediate, and the CA certificates above it; a receiver checks
// it against the domain's roots before it trusts the key, so an issuer can
// add its own authorities to the root's signed bundle. For a federated
// domain the key comes from that mesh's SPIFFE bundle endpoint, Chain is
// empty, and the root's bundle signature vouches for it (Digest covers it).
type JWTAuthority struct {
	// KeyID is the JWT "kid": JWTKeyID(PublicKey) for own domains; a
	// federated mesh's own choice otherwise.
	KeyID string
	// PublicKey verifies JWT-SVIDs signed under KeyID.
	PublicKey crypto.PublicKey
	// ExpiresAt is when the key stops verifying anything; zero means the
	// certificate's NotAfter decides (own domains) or none was published
	// (federated domains).
	ExpiresAt time.Time
	// Chain is the DER certificate of PublicKey and the CA certificates
	// above it, nearest first, root excluded; nil for a federated domain.
	Chain [][]byte
}

// JWTKeyID returns the key ID meshca gives a public key: the unpadded
// base64url SHA-256 of its PKIX DER.
func JWTKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("jwt key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// equal reports whether a and b carry the same key, ID, expiry and chain.
func (a JWTAuthority) equal(b JWTAuthority) bool {
	if a.KeyID != b.KeyID || !a.ExpiresAt.Equal(b.ExpiresAt) || !slices.EqualFunc(a.Chain, b.Chain, bytes.Equal) {
		return false
	}
	x, errX := x509.MarshalPKIXPublicKey(a.PublicKey)
	y, errY := x509.MarshalPKIXPublicKey(b.PublicKey)
	return errX == nil && errY == nil && bytes.Equal(x, y)
}

// JWTSignerID is the URI SAN of the certificate that authenticates a JWT
// authority of cluster's issuer in td: spiffe://<td>/meshca/jwt/<cluster>.
func JWTSignerID(td spiffeid.TrustDomain, cluster string) (spiffeid.ID, error) {
	id, err := spiffeid.FromPath(td, jwtSignerPathPrefix+cluster)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("JWT signer identity of cluster %q: %w", cluster, err)
	}
	return id, nil
}

// VerifyJWTAuthority authenticates an authority of one of the root's own
// trust domains at now: its certificate (a.Chain[0]) must chain through
// the rest of a.Chain to roots, be no CA, allow digital signatures, name
// JWTSignerID(td, cluster) where cluster is the one its intermediate
// issues for, hold a.PublicKey, and be valid at now; a.KeyID must be
// JWTKeyID(a.PublicKey), and a.ExpiresAt, when set, must lie after now and
// not after the certificate's NotAfter.
func VerifyJWTAuthority(a JWTAuthority, td spiffeid.TrustDomain, roots *Bundle, now time.Time) error {
	if roots == nil || len(a.Chain) == 0 {
		return errors.New("JWT authority: no certificate chain or no roots")
	}
	certs := make([]*x509.Certificate, len(a.Chain))
	for i, der := range a.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("JWT authority %q: certificate %d: %w", a.KeyID, i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots.Pool(), Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("JWT authority %q: %w", a.KeyID, err)
	}
	if err := checkJWTSigner(leaf, certs[1:], td); err != nil {
		return fmt.Errorf("JWT authority %q: %w", a.KeyID, err)
	}
	kid, err := JWTKeyID(a.PublicKey)
	if err != nil {
		return err
	}
	der, _ := x509.MarshalPKIXPublicKey(a.PublicKey)
	switch {
	case kid != a.KeyID:
		return fmt.Errorf("JWT authority %q: key ID does not name its key", a.KeyID)
	case !bytes.Equal(der, leaf.RawSubjectPublicKeyInfo):
		return fmt.Errorf("JWT authority %q: key is not its certificate's", a.KeyID)
	case !a.ExpiresAt.IsZero() && !now.Before(a.ExpiresAt):
		return fmt.Errorf("JWT authority %q: expired at %s", a.KeyID, a.ExpiresAt.UTC().Format(time.RFC3339))
	case a.ExpiresAt.After(leaf.NotAfter):
		return fmt.Errorf("JWT authority %q: outlives its certificate", a.KeyID)
	}
	return nil
}

// checkJWTSigner checks the certificate profile of a JWT authority: an end
// entity for signatures that names the JWT signer of the cluster its
// issuing intermediate (above[0]) serves, in td.
func checkJWTSigner(leaf *x509.Certificate, above []*x509.Certificate, td spiffeid.TrustDomain) error {
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return errors.New("certificate is not a signing end entity")
	}
	if len(above) == 0 {
		return errors.New("certificate not issued by a cluster intermediate")
	}
	itd, cluster, ok := issuerCluster(above[0])
	if !ok || itd != td {
		return errors.New("certificate not issued by a cluster intermediate of its trust domain")
	}
	want, err := JWTSignerID(td, cluster)
	if err != nil {
		return err
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want.String() {
		return fmt.Errorf("certificate does not name %s", want)
	}
	return nil
}
