package agent

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/big"
	"slices"
	"time"

	"github.com/meshca/meshca/trust"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// crlRejectedMetricName counts the CRLs the agent dropped from the trust
// bundles it received, by reason: invalid (does not parse or its signature
// does not verify), untrusted (its issuer does not chain to its trust
// domain's roots) or stale (not current when received, or expired while
// held).
const crlRejectedMetricName = "meshca_agent_crl_rejected_total"

// Reasons of crlRejectedMetricName.
const (
	crlInvalid   = "invalid"
	crlUntrusted = "untrusted"
	crlStale     = "stale"
)

// crlMetrics counts rejected CRLs. A nil *crlMetrics does nothing.
type crlMetrics struct {
	rejected *prometheus.CounterVec
}

// newCRLMetrics registers the counter on reg; nil reg means no metrics. A
// counter registered before (another agent in the process) is shared.
func newCRLMetrics(reg prometheus.Registerer) (*crlMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	c, err := registerCounterVec(reg, crlRejectedMetricName,
		"CRLs dropped from received trust bundles, by reason (invalid, untrusted, stale).", "reason", crlInvalid, crlUntrusted, crlStale)
	if err != nil {
		return nil, err
	}
	return &crlMetrics{rejected: c}, nil
}

func (m *crlMetrics) reject(reason string) {
	if m != nil {
		m.rejected.WithLabelValues(reason).Inc()
	}
}

// heldCRL is a CRL that VerifyCRL accepted.
type heldCRL struct {
	der []byte
	// issuer identifies the CA that signed it (its name and key): CRLs of
	// one issuer supersede each other by number.
	issuer     [32]byte
	issuerName string
	// issuerCert signed it. byRoot: issuerCert is a root of the trust
	// domain (the CRL came without an issuer chain); otherwise issuerChain
	// is the rest of the chain above issuerCert (DER, without the root).
	issuerCert  *x509.Certificate
	byRoot      bool
	issuerChain [][]byte
	// rawIssuer and revoked are the CRL's issuer name and the serials it
	// revokes.
	rawIssuer  []byte
	revoked    []*big.Int
	number     *big.Int
	thisUpdate time.Time
	nextUpdate time.Time
}

// newer reports whether h supersedes o, a CRL of the same issuer: a higher
// CRL number, then a later ThisUpdate, then (for a total order between
// issuer replicas that signed at the same millisecond) the larger DER.
func (h *heldCRL) newer(o *heldCRL) bool {
	if c := h.number.Cmp(o.number); c != 0 {
		return c > 0
	}
	if !h.thisUpdate.Equal(o.thisUpdate) {
		return h.thisUpdate.After(o.thisUpdate)
	}
	return bytes.Compare(h.der, o.der) > 0
}

// revokes reports whether h lists leaf: leaf's serial is on it and the CA
// that signed h signed leaf.
func (h *heldCRL) revokes(leaf *x509.Certificate) bool {
	if !bytes.Equal(h.rawIssuer, leaf.RawIssuer) ||
		!slices.ContainsFunc(h.revoked, func(s *big.Int) bool { return s.Cmp(leaf.SerialNumber) == 0 }) {
		return false
	}
	return leaf.CheckSignatureFrom(h.issuerCert) == nil
}

// crlReason maps a VerifyCRL error to a metric reason.
func crlReason(err error) string {
	switch {
	case errors.Is(err, trust.ErrCRLStale):
		return crlStale
	case errors.Is(err, trust.ErrCRLUntrusted):
		return crlUntrusted
	}
	return crlInvalid
}

// verifyCRLs checks every CRL of every domain of b against that domain's
// own CAs at now (trust.DomainBundle.OwnCAs: under an upstream PKI
// meshca's CAs, not the upstream's root, which vouches for other CAs too). A CRL that fails is logged, counted and dropped; nothing
// else of b is affected. For each issuer only its newest CRL is kept, in
// every domain that carried one of its CRLs. The result maps each domain
// with CRLs to them, without duplicates.
func verifyCRLs(b *trust.TrustBundle, now time.Time, log *slog.Logger, metrics *crlMetrics) map[spiffeid.TrustDomain][]*heldCRL {
	newest := map[[32]byte]*heldCRL{}
	issuers := map[spiffeid.TrustDomain][][32]byte{}
	for _, d := range b.Domains {
		for i, c := range d.CRLs {
			rl, issuer, err := trust.VerifyCRL(c, d.OwnCAs(), now)
			if err != nil {
				reason := crlReason(err)
				metrics.reject(reason)
				sum := sha256.Sum256(c.DER)
				log.Warn("CRL rejected; the trust bundle is applied without it", "sequence", b.Sequence,
					"trust_domain", d.TrustDomain.Name(), "crl_index", i, "crl_sha256", hex.EncodeToString(sum[:]),
					"reason", reason, "error", err.Error())
				continue
			}
			h := &heldCRL{
				der: c.DER, issuer: issuerKey(issuer), issuerName: issuer.Subject.String(),
				issuerCert: issuer, byRoot: len(c.IssuerChain) == 0, rawIssuer: rl.RawIssuer,
				number: rl.Number, thisUpdate: rl.ThisUpdate, nextUpdate: rl.NextUpdate,
			}
			if len(c.IssuerChain) > 1 {
				h.issuerChain = c.IssuerChain[1:]
			}
			for _, e := range rl.RevokedCertificateEntries {
				h.revoked = append(h.revoked, e.SerialNumber)
			}
			if h.number == nil {
				h.number = new(big.Int)
			}
			if cur, ok := newest[h.issuer]; !ok || h.newer(cur) {
				newest[h.issuer] = h
			}
			issuers[d.TrustDomain] = appendUnique(issuers[d.TrustDomain], h.issuer)
		}
	}
	out := map[spiffeid.TrustDomain][]*heldCRL{}
	for td, keys := range issuers {
		for _, k := range keys {
			out[td] = append(out[td], newest[k])
		}
	}
	return out
}

// issuerKey identifies a CRL issuer by its name and key: intermediates
// that share a name but not a key sign separate CRLs.
func issuerKey(c *x509.Certificate) [32]byte {
	h := sha256.New()
	h.Write(c.RawSubject)
	h.Write(c.RawSubjectPublicKeyInfo)
	return [32]byte(h.Sum(nil))
}

func appendUnique[T comparable](s []T, v T) []T {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// pruneCRLs removes from held the CRLs whose NextUpdate has passed at now,
// logging and counting each once, and returns the earliest NextUpdate of
// those left (zero when none are left).
func pruneCRLs(held map[spiffeid.TrustDomain][]*heldCRL, now time.Time, log *slog.Logger, metrics *crlMetrics) time.Time {
	var earliest time.Time
	dropped := map[*heldCRL]bool{}
	for td, crls := range held {
		var kept []*heldCRL
		for _, h := range crls {
			if now.Before(h.nextUpdate) {
				kept = append(kept, h)
				if earliest.IsZero() || h.nextUpdate.Before(earliest) {
					earliest = h.nextUpdate
				}
				continue
			}
			if !dropped[h] {
				dropped[h] = true
				metrics.reject(crlStale)
				log.Warn("CRL expired and is no longer served; its issuer has not published a newer one",
					"issuer", h.issuerName, "crl_number", h.number.String(), "next_update", h.nextUpdate.UTC())
			}
		}
		if len(kept) == 0 {
			delete(held, td)
		} else {
			held[td] = kept
		}
	}
	return earliest
}

// withCRLs returns a copy of domains whose CRLs are those of held.
func withCRLs(domains []trust.DomainBundle, held map[spiffeid.TrustDomain][]*heldCRL) []trust.DomainBundle {
	out := make([]trust.DomainBundle, len(domains))
	for i, d := range domains {
		d.CRLs = nil
		for _, h := range held[d.TrustDomain] {
			d.CRLs = append(d.CRLs, trust.CRL{DER: h.der})
		}
		out[i] = d
	}
	return out
}

// heldDER returns the DER of every held CRL.
func heldDER(held map[spiffeid.TrustDomain][]*heldCRL) [][]byte {
	var out [][]byte
	for _, hs := range held {
		for _, h := range hs {
			out = append(out, h.der)
		}
	}
	return out
}
