package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// jwtRejectedMetricName counts the JWT authorities the agent dropped from
// the trust bundles it received, by reason: invalid (an own trust domain's
// authority that trust.VerifyJWTAuthority refuses, or a key the agent
// cannot publish as a JWK) or expired (past its expiry when received).
const jwtRejectedMetricName = "meshca_agent_jwt_authority_rejected_total"

// Reasons of jwtRejectedMetricName.
const (
	jwtInvalid = "invalid"
	jwtExpired = "expired"
)

// jwtMetrics counts rejected JWT authorities. A nil *jwtMetrics does
// nothing.
type jwtMetrics struct {
	rejected *prometheus.CounterVec
}

// newJWTMetrics registers the counter on reg; nil reg means no metrics. A
// counter registered before (another agent in the process) is shared.
func newJWTMetrics(reg prometheus.Registerer) (*jwtMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	c, err := registerCounterVec(reg, jwtRejectedMetricName,
		"JWT authorities dropped from received trust bundles, by reason (invalid, expired).", "reason", jwtInvalid, jwtExpired)
	if err != nil {
		return nil, err
	}
	return &jwtMetrics{rejected: c}, nil
}

func (m *jwtMetrics) reject(reason string) {
	if m != nil {
		m.rejected.WithLabelValues(reason).Inc()
	}
}

// heldJWT is a JWT authority the agent accepted, with when it stops
// verifying anything (zero: no expiry known).
type heldJWT struct {
	auth    trust.JWTAuthority
	expires time.Time
}

// errJWTExpired reports an authority past its expiry.
var errJWTExpired = errors.New("JWT authority expired")

// acceptJWTAuthority decides whether the agent may use authority a of
// domain d at now, and until when. An own (not federated) domain's
// authority authenticates itself: trust.VerifyJWTAuthority against the
// domain's own CAs (under an upstream PKI meshca's CAs, never the
// upstream's root, which vouches for CAs that are not meshca's), and it expires with its certificate at the latest. A
// federated domain's authority is vouched for by the root's signature over
// the bundle (the caller checked it) and is taken as it is. Either must
// hold a key that can be published as a JWK (ECDSA, RSA or Ed25519) and
// not have expired; an expired one fails with errJWTExpired.
func acceptJWTAuthority(a trust.JWTAuthority, d trust.DomainBundle, now time.Time) (heldJWT, error) {
	if !a.ExpiresAt.IsZero() && !now.Before(a.ExpiresAt) {
		return heldJWT{}, fmt.Errorf("%w at %s", errJWTExpired, a.ExpiresAt.UTC().Format(time.RFC3339))
	}
	switch a.PublicKey.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return heldJWT{}, fmt.Errorf("unsupported key type %T", a.PublicKey)
	}
	if a.KeyID == "" {
		return heldJWT{}, errors.New("no key ID")
	}
	h := heldJWT{auth: a, expires: a.ExpiresAt}
	if d.Federated {
		return h, nil
	}
	if err := trust.VerifyJWTAuthority(a, d.TrustDomain, d.OwnCAs(), now); err != nil {
		return heldJWT{}, err
	}
	leaf, err := x509.ParseCertificate(a.Chain[0]) // VerifyJWTAuthority parsed it
	if err != nil {
		return heldJWT{}, err
	}
	if h.expires.IsZero() || leaf.NotAfter.Before(h.expires) {
		h.expires = leaf.NotAfter
	}
	return h, nil
}

// verifyJWTAuthorities returns the JWT authorities of every domain of b
// that the agent may use at now (see acceptJWTAuthority), by trust domain,
// one per key ID: of several with one ID the one that expires last (an
// authority relayed by several issuers or root replicas arrives more than
// once). One that fails is logged, counted and dropped; the others, and
// the rest of b, are not affected.
func verifyJWTAuthorities(b *trust.TrustBundle, now time.Time, log *slog.Logger, metrics *jwtMetrics) map[spiffeid.TrustDomain][]heldJWT {
	out := map[spiffeid.TrustDomain][]heldJWT{}
	for _, d := range b.Domains {
		byID := map[string]heldJWT{}
		for _, a := range d.JWTAuthorities {
			h, err := acceptJWTAuthority(a, d, now)
			if err != nil {
				reason, level := jwtInvalid, slog.LevelWarn
				if errors.Is(err, errJWTExpired) {
					// The root keeps publishing a key until it expires by
					// its clock; one that just expired by ours is routine.
					reason, level = jwtExpired, slog.LevelDebug
				}
				metrics.reject(reason)
				log.Log(context.Background(), level, "JWT authority rejected; the trust bundle is applied without it",
					"sequence", b.Sequence, "trust_domain", d.TrustDomain.Name(), "key_id", a.KeyID, "reason", reason, "error", err.Error())
				continue
			}
			if cur, ok := byID[a.KeyID]; !ok || expiresLater(h.expires, cur.expires) {
				byID[a.KeyID] = h
			}
		}
		if len(byID) == 0 {
			continue
		}
		held := make([]heldJWT, 0, len(byID))
		for _, h := range byID {
			held = append(held, h)
		}
		slices.SortFunc(held, func(x, y heldJWT) int { return strings.Compare(x.auth.KeyID, y.auth.KeyID) })
		out[d.TrustDomain] = held
	}
	return out
}

// expiresLater reports whether expiry x is later than y; zero means never.
func expiresLater(x, y time.Time) bool {
	switch {
	case y.IsZero():
		return false
	case x.IsZero():
		return true
	}
	return x.After(y)
}

// pruneJWTAuthorities removes from held the authorities that have expired
// at now, and returns the earliest expiry of those left (zero when none
// expires).
func pruneJWTAuthorities(held map[spiffeid.TrustDomain][]heldJWT, now time.Time, log *slog.Logger) time.Time {
	var earliest time.Time
	for td, hs := range held {
		kept := slices.DeleteFunc(slices.Clone(hs), func(h heldJWT) bool {
			if h.expires.IsZero() || now.Before(h.expires) {
				return false
			}
			log.Info("JWT authority expired and is no longer served", "trust_domain", td.Name(), "key_id", h.auth.KeyID,
				"expired_at", h.expires.UTC())
			return true
		})
		for _, h := range kept {
			if !h.expires.IsZero() && (earliest.IsZero() || h.expires.Before(earliest)) {
				earliest = h.expires
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

// withJWTAuthorities returns a copy of domains whose JWT authorities are
// those of held.
func withJWTAuthorities(domains []trust.DomainBundle, held map[spiffeid.TrustDomain][]heldJWT) []trust.DomainBundle {
	out := make([]trust.DomainBundle, len(domains))
	for i, d := range domains {
		d.JWTAuthorities = nil
		for _, h := range held[d.TrustDomain] {
			d.JWTAuthorities = append(d.JWTAuthorities, h.auth)
		}
		out[i] = d
	}
	return out
}

// earliest returns the earlier of two instants; zero means none.
func earliest(x, y time.Time) time.Time {
	switch {
	case x.IsZero():
		return y
	case y.IsZero() || x.Before(y):
		return x
	}
	return y
}
