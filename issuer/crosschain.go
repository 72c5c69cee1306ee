package issuer

import (
	"crypto/x509"
	"errors"
	"slices"
	"strings"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// During a root rotation the bundle holds two roots, and relying parties do
// not all learn the second at once: istio-agent, for one, replaces its
// ROOTCA only when it renews its own certificate, and a relying party may
// trust one anchor alone. Two things in every chain the issuer returns keep
// each generation's leaves verifiable by the other's anchor:
//
//   - the cross certificates of the root the intermediate chains to (its
//     subject and key signed by another root of the bundle), after the
//     intermediates: a verifier that trusts only the other root builds leaf
//     → intermediate → cross certificate → other root;
//   - the last entry holds every root of the bundle, the signing root first:
//     istio-agent takes the last entry of the CA response as its ROOTCA
//     (security/pkg/nodeagent/cache/secretcache.go, generateNewSecret) and
//     splits it into certificates, so it trusts both roots from its next
//     renewal on. meshca's agent reads the first certificate of each entry.

// crossFor returns the cross certificates of b that certify the root chain
// ends in under another root of b, for the chains of a: valid now and until
// a expires (so that no leaf of a ever carries an expired one), and each
// verified as a path for a's leaves: a through the cross certificate to its
// issuing root, with the path lengths a leaf below a needs. One that fails
// is left out and logged.
func (iss *Issuer) crossFor(a *ca.Authority, chain []*x509.Certificate, b *trust.Bundle) []*x509.Certificate {
	root := chain[len(chain)-1]
	now := iss.cfg.Now()
	var out []*x509.Certificate
	for _, cc := range b.CrossSigned() {
		c := cc.Certificate
		if !cc.Subject.Equal(root) || now.Before(c.NotBefore) || c.NotAfter.Before(a.Certificate.NotAfter) {
			continue
		}
		anchors, inters := x509.NewCertPool(), x509.NewCertPool()
		anchors.AddCert(cc.Issuer)
		for _, x := range slices.Concat(a.Chain, []*x509.Certificate{c}) {
			inters.AddCert(x)
		}
		_, err := a.Certificate.Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inters, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err == nil && !leafPathFits(slices.Concat(chain[:len(chain)-1], []*x509.Certificate{c, cc.Issuer})) {
			err = errPathLength
		}
		if err != nil {
			iss.cfg.Logger.Warn("a cross certificate of the root does not verify for this intermediate; chains leave it out",
				"serial", trust.SerialHex(c.SerialNumber), "intermediate_serial", trust.SerialHex(a.Certificate.SerialNumber),
				"error", err.Error())
			continue
		}
		out = append(out, c)
	}
	return out
}

var errPathLength = errors.New("a CA of the cross-signed path allows fewer CAs below it than a leaf's chain has")

// leafPathFits reports whether a leaf's chain through path (its CA
// certificates from the issuing one up to the anchor) respects every path
// length, counted as crypto/x509 counts it: every CA certificate between the
// leaf and the one that constrains.
func leafPathFits(path []*x509.Certificate) bool {
	for i, c := range path {
		if c.BasicConstraintsValid && c.MaxPathLen >= 0 && i > c.MaxPathLen {
			return false
		}
	}
	return true
}

// rootsPEM is the last entry of a response: root, then b's other roots, as
// one PEM string.
func rootsPEM(root *x509.Certificate, b *trust.Bundle) string {
	var sb strings.Builder
	sb.WriteString(certPEM(root))
	for _, r := range b.Roots() {
		if !r.Equal(root) {
			sb.WriteString(certPEM(r))
		}
	}
	return sb.String()
}
