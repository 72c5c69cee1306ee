package root

import (
	"context"
	"crypto/x509"
	"slices"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// Cross certificates during a root rotation.
//
// When a new root is created, it and every root then in the bundle certify
// each other (ca.Authority.CrossSign): the new root's subject and key signed
// by the old root's key, and the old root's signed by the new key. The
// certificates are stored with the new root and published in the bundle
// (trust.TrustBundle.CrossSigned) while both of their roots are in it; the
// issuers put them into the chains they return, so that a relying party that
// anchors on one root alone (istio-agent until its next renewal, or any
// verifier with a single anchor) verifies leaves of either generation.
//
// Their lives are bounded so that they extend no trust the bundle does not:
//   - new root signed by the old one: within both roots' validity;
//   - old root signed by the new one: also no later than the old root's
//     last use. An old root that is still signing stops at the new root's
//     activation, so nothing under it outlives activation plus one
//     intermediate life; a retiring root's last use is already known. The
//     active root's intermediates are clamped to that end (state.crossUntil),
//     which covers the moments between activation and the next
//     re-evaluation, when the old root still signs.
//
// Once the old root leaves the bundle (retired: nothing under it is valid),
// its cross certificates leave the bundle and the chains with it.

// crossSignLocked mints the cross certificates between the new root n,
// which activates at activateAt, and every root in the bundle now whose key
// loads. A root whose key does not load gets none, which is logged: its
// relying parties then learn the new root from the bundle only.
func (r *Root) crossSignLocked(ctx context.Context, n *ca.Authority, activateAt, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, s := range r.statuses {
		if !s.State.InBundle() || !validAt(s.Cert, now) {
			continue
		}
		key, err := r.signer(ctx, s.KeyRef)
		var old *ca.Authority
		if err == nil {
			old, err = ca.NewAuthority(s.Cert, key)
		}
		var up, down *x509.Certificate
		if err == nil {
			up, err = old.CrossSign(ca.CrossRequest{Subject: n.Certificate, Now: now})
		}
		if err == nil {
			down, err = n.CrossSign(ca.CrossRequest{Subject: s.Cert, NotAfter: r.lastUseBoundLocked(s, activateAt), Now: now})
		}
		if err != nil {
			r.log.WarnContext(ctx, "cannot cross-sign the new root with a root in the bundle; relying parties that trust only that root "+
				"verify the new root's certificates once they have the new bundle", "sha256", fingerprintHex(s.Cert),
				"new_sha256", fingerprintHex(n.Certificate), "error", err.Error())
			continue
		}
		out = append(out, up, down)
	}
	return out
}

// lastUseBoundLocked is when nothing signed under s can be valid any more,
// once a root activating at activateAt replaces it: the last use of a
// retiring root, else one intermediate life after the later of the two
// activations.
func (r *Root) lastUseBoundLocked(s RootStatus, activateAt time.Time) time.Time {
	if s.State == RootRetiring {
		return r.lastUse[trust.Fingerprint(s.Cert)]
	}
	return slices.MaxFunc([]time.Time{activateAt, s.ActivateAt}, time.Time.Compare).Add(r.cfg.IntermediateTTL)
}

// crossSignedLocked returns the recorded cross certificates that link two
// roots of inBundle and are valid at now, and the end of those that certify
// the active root (activeFP) under a prepared root (see state.crossUntil).
func crossSignedLocked(statuses []RootStatus, inBundle *trust.Bundle, activeFP [32]byte, now time.Time) ([]*x509.Certificate, time.Time) {
	var all []*x509.Certificate
	prepared := map[[32]byte]bool{}
	for _, s := range statuses {
		all = append(all, s.Cross...)
		if s.State == RootPrepared {
			prepared[trust.Fingerprint(s.Cert)] = true
		}
	}
	var out []*x509.Certificate
	var until time.Time
	for _, cc := range inBundle.WithCrossSigned(all...).CrossSigned() {
		c := cc.Certificate
		if !validAt(c, now) {
			continue
		}
		out = append(out, c)
		if trust.Fingerprint(cc.Subject) == activeFP && prepared[trust.Fingerprint(cc.Issuer)] && (until.IsZero() || c.NotAfter.Before(until)) {
			until = c.NotAfter
		}
	}
	return out, until
}
