package agent

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/meshca/meshca/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CRLs travel outside the root's signature on a trust bundle: any issuer
// that relays the bundle (or anyone between it and the root) could send an
// old CRL, which undoes revocations, or leave a CRL out. The agent therefore
// refuses a bundle that would take its revocation state backwards:
//
//   - Rollback: for each CRL issuer (identified by its name and key, see
//     issuerKey) the agent remembers the highest CRL number it accepted and
//     the CRL that carried it, for as long as it runs. A bundle whose newest
//     valid CRL of that issuer has a lower number is refused
//     (errCRLRollback); one with the same number but other content is
//     refused too (errCRLConflict): a CRL issuer never signs two CRLs under
//     one number.
//   - Stripping: a bundle must carry, in each trust domain, a CRL of every
//     issuer whose CRL the agent serves for that domain and that is still
//     current (errCRLDropped). A held CRL is current at now when now is
//     more than crlDropGrace before its NextUpdate (the root drops a CRL at
//     NextUpdate by its own clock, which may run ahead of the agent's) and
//     its issuer is still trusted by the new bundle for that trust domain:
//     a root's CRL while the root is among the domain's roots; an
//     intermediate's CRL while the intermediate chains to the domain's
//     roots at now and no CRL of the new bundle revokes it or a CA above
//     it. A CRL may thus go only when it (nearly) expires, when its root
//     leaves the bundle, or when its intermediate expires or is revoked
//     (which is when the root stops relaying it).
//
// A refused bundle changes nothing: the agent keeps serving the trust,
// CRLs and certificate it holds, and renewals go on. Only the CRLs that
// trust.VerifyCRL accepts count; a garbled copy of a current CRL is the same
// as none. The numbers are not persisted: a restarted agent starts from the
// first bundle it receives.

// crlDropGrace is how long before its NextUpdate a CRL may be left out of a
// bundle: the clock skew between the root and its agents tolerated.
const crlDropGrace = 5 * time.Minute

// Errors of a trust bundle that would take the CRLs backwards.
var (
	errCRLRollback = errors.New("trust bundle carries an older CRL than one already accepted")
	errCRLConflict = errors.New("trust bundle carries a CRL with the number of an accepted one but other content")
	errCRLDropped  = errors.New("trust bundle omits a current CRL")
)

// crlMark is the highest CRL number accepted from one issuer, with the CRL
// that carried it.
type crlMark struct {
	number *big.Int
	der    []byte
}

// checkCRLProgress reports whether the verified CRLs next of bundle b may
// replace held, the CRLs served now, given marks, the highest number
// accepted per issuer; nil when they may. See the comment above.
func checkCRLProgress(marks map[[32]byte]crlMark, held, next map[spiffeid.TrustDomain][]*heldCRL, b *trust.TrustBundle, now time.Time) error {
	for _, crls := range next {
		for _, h := range crls {
			m, ok := marks[h.issuer]
			if !ok {
				continue
			}
			switch c := h.number.Cmp(m.number); {
			case c < 0:
				return fmt.Errorf("%w: issuer %q, CRL number %s, accepted %s", errCRLRollback, h.issuerName, h.number, m.number)
			case c == 0 && !bytes.Equal(h.der, m.der):
				return fmt.Errorf("%w: issuer %q, CRL number %s", errCRLConflict, h.issuerName, h.number)
			}
		}
	}
	revoked := revokedSerials(next)
	for td, crls := range held {
		for _, h := range crls {
			if !now.Add(crlDropGrace).Before(h.nextUpdate) || carriesIssuer(next[td], h.issuer) || !issuerTrusted(h, b, td, revoked, now) {
				continue
			}
			return fmt.Errorf("%w: trust domain %s, issuer %q, CRL number %s valid until %s", errCRLDropped,
				td.Name(), h.issuerName, h.number, h.nextUpdate.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// recordCRLMarks raises marks to the CRLs of an accepted bundle.
func recordCRLMarks(marks map[[32]byte]crlMark, accepted map[spiffeid.TrustDomain][]*heldCRL) {
	for _, crls := range accepted {
		for _, h := range crls {
			if m, ok := marks[h.issuer]; !ok || h.number.Cmp(m.number) > 0 {
				marks[h.issuer] = crlMark{number: h.number, der: h.der}
			}
		}
	}
}

func carriesIssuer(crls []*heldCRL, issuer [32]byte) bool {
	for _, h := range crls {
		if h.issuer == issuer {
			return true
		}
	}
	return false
}

// revokedSerials returns the certificates the CRLs revoke, keyed by
// revocationKey.
func revokedSerials(crls map[spiffeid.TrustDomain][]*heldCRL) map[string]bool {
	out := map[string]bool{}
	for _, list := range crls {
		for _, h := range list {
			for _, s := range h.revoked {
				out[revocationKey(h.rawIssuer, s)] = true
			}
		}
	}
	return out
}

func revocationKey(rawIssuer []byte, serial *big.Int) string {
	return string(rawIssuer) + "\x00" + serial.String()
}

// issuerTrusted reports whether trust domain td of b still trusts the
// issuer of h at now, with revoked the certificates b's CRLs revoke.
func issuerTrusted(h *heldCRL, b *trust.TrustBundle, td spiffeid.TrustDomain, revoked map[string]bool, now time.Time) bool {
	d, ok := b.Domain(td)
	if !ok || d.Roots == nil {
		return false
	}
	cas := d.OwnCAs()
	if h.byRoot {
		return bundleContains(cas, h.issuerCert)
	}
	chain := []*x509.Certificate{h.issuerCert}
	inters := x509.NewCertPool()
	for _, der := range h.issuerChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return false // trust.VerifyCRL parsed it; cannot happen
		}
		inters.AddCert(c)
		chain = append(chain, c)
	}
	if _, err := h.issuerCert.Verify(x509.VerifyOptions{Roots: cas.Pool(), Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return false
	}
	for _, c := range chain {
		if revoked[revocationKey(c.RawIssuer, c.SerialNumber)] {
			return false
		}
	}
	return true
}
