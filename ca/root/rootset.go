package root

import (
	"crypto/x509"
	"time"

	"github.com/meshca/meshca/trust"
)

// RootState is where a root is in its life, decided by RootStates from the
// records and the clock alone.
type RootState string

const (
	// RootPrepared: in the bundle, not yet signing (its propagation delay
	// has not passed).
	RootPrepared RootState = "prepared"
	// RootActive: signs new intermediates. At most one root is active.
	RootActive RootState = "active"
	// RootRetiring: replaced, but still in the bundle because something
	// signed under it is still valid.
	RootRetiring RootState = "retiring"
	// RootRetired: out of the bundle; nothing under it is valid any more,
	// or it has expired itself.
	RootRetired RootState = "retired"
)

// RootRecord is one root the root service created: a self-signed root, or
// under an upstream PKI (Config.Upstream) a CA certificate the upstream
// issued for a key meshca holds.
type RootRecord struct {
	Cert *x509.Certificate
	// Chain holds the upstream's intermediates above Cert, nearest first;
	// Anchor is the upstream's root. Both are empty for a self-signed
	// root.
	Chain  []*x509.Certificate
	Anchor *x509.Certificate
	// KeyRef names the key (a file path or "vault:<key>").
	KeyRef string
	// AddedAt is when it joined the bundle; ActivateAt when it may start
	// signing.
	AddedAt, ActivateAt time.Time
	// Cross are the cross certificates minted with this root (crosssign.go):
	// its subject and key signed by each root then in the bundle, and
	// theirs signed by it. They are stored after the root's own DER.
	Cross []*x509.Certificate
}

// anchor returns the trust anchor r chains to: the upstream's root, or r
// itself when it is self-signed.
func (r RootRecord) anchor() *x509.Certificate {
	if r.Anchor != nil {
		return r.Anchor
	}
	return r.Cert
}

// RootStatus is a root with its state at some instant.
type RootStatus struct {
	RootRecord
	State RootState
}

// RootStates decides the state of every root at now. Roots are considered in
// the order given (oldest first). The active root is the newest root whose
// ActivateAt has passed and that is itself valid at now; newer roots that are
// not yet due are prepared; older roots are retiring while lastUse (the
// latest NotAfter of anything signed under them, by fingerprint) is after
// now, and retired otherwise. A root that has expired is always retired.
func RootStates(roots []RootRecord, lastUse map[[32]byte]time.Time, now time.Time) []RootStatus {
	out := make([]RootStatus, len(roots))
	active := -1
	for i := len(roots) - 1; i >= 0; i-- {
		r := roots[i]
		if !r.ActivateAt.After(now) && validAt(r.Cert, now) {
			active = i
			break
		}
	}
	for i, r := range roots {
		st := RootRetired
		switch {
		case !validAt(r.Cert, now):
		case i == active:
			st = RootActive
		case i > active:
			st = RootPrepared
		case lastUse[trust.Fingerprint(r.Cert)].After(now):
			st = RootRetiring
		}
		out[i] = RootStatus{RootRecord: r, State: st}
	}
	return out
}

// InBundle reports whether a root in state s belongs in the trust bundle.
func (s RootState) InBundle() bool { return s != RootRetired }

func validAt(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && now.Before(c.NotAfter)
}
