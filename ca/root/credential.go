package root

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/store"
)

// Issuer credential lineage. The root keeps, per issuer of a cluster (its
// single issuer, or each named replica enrolled with a join token of more
// replicas), the serial of the credential it issued last (current) and of
// the one that credential replaced (previous), in store.ClusterCredential.
// Everything below is per lineage: a replica's credentials say nothing about
// another replica's. Every Renew replaces the
// credential, so a copy of an issuer's credential files and the original
// cannot both keep renewing without one of them presenting a credential the
// root no longer accepts. The rule, for a credential that chains to a root
// and names a registered cluster:
//
//   - current: accepted. A Renew makes the new credential current and the
//     presented one previous; any other call marks current used.
//   - previous, while current is unused: accepted. This is the honest retry:
//     the issuer's Renew response was lost (or its new credential could not
//     be stored), so it never held current. A Renew makes a new current and
//     keeps previous; the unused current is abandoned.
//   - previous once current has been used, or any other credential of the
//     cluster (an abandoned successor, an older one): reuse. Two parties hold
//     credentials of the cluster. The root logs an ERROR "credential reuse",
//     appends a credential.reuse audit event, counts
//     meshca_root_credential_reuse_total{cluster}, and revokes the lineage:
//     no credential of the cluster is accepted until an administrator issues
//     a new join token (`meshca admin cluster add` again) and the issuer
//     enrols with it. Refusing only the late party would leave whoever
//     rotated first (possibly the thief) in control.
//   - any other credential issued before the cluster's last enrolment (its
//     NotBefore is not after store.ClusterCredential.Since, the NotBefore
//     of the newest credential of the lineages that enrolment replaced):
//     refused, with a WARN, but not reuse: after a revoked lineage the
//     administrator re-enrols the issuer, and the credentials a thief kept
//     from before must not revoke the new lineage again. (Every credential
//     issued becomes current, so the newest is the current one's; NotBefore
//     has second precision, so a reused credential issued in the same second
//     as the last one before the enrolment is refused without the alarm.)
//   - no record (a cluster enrolled before the root kept lineages): the
//     first credential presented is adopted as current.
//
// Two concurrent Renews with one credential swap from the same record: the
// store lets exactly one win; the other is refused as unavailable (a
// retry is judged against the winner's record).
//
// A credential is also refused when the deny-list holds its serial, its
// SPIFFE ID or its cluster.

// credentialCall says whether an authenticated call replaces the
// credential (Renew), uses it, or only reads public state with it (a
// bundle watch).
type credentialCall int

const (
	useCredential credentialCall = iota
	renewCredential
	// watchCredential admits the current credential or its predecessor
	// and records nothing: a watch reads what GetBundle gives anyone, and
	// an issuer's watch may reconnect with the credential a renewal is
	// just replacing, which must not count as reuse.
	watchCredential
)

// lineageKey names one credential lineage: an issuer replica of a cluster
// (replica "" is the cluster's single issuer).
type lineageKey struct{ cluster, replica string }

func (k lineageKey) String() string {
	if k.replica == "" {
		return k.cluster
	}
	return k.cluster + " replica " + k.replica
}

// verdict is how judgeCredential rules on a presented credential.
type verdict int

const (
	accept verdict = iota
	// adopt: the cluster has no record; the credential becomes current.
	adopt
	// reuse: refuse, revoke the lineage and raise the alarm.
	reuse
	// lineageRevoked: refuse; the lineage was revoked earlier.
	lineageRevoked
	// earlier: refuse; the credential predates the last enrolment.
	earlier
)

// judgeCredential applies the rule above to the record of the cluster
// (found false: none) and the credential presented.
func judgeCredential(rec store.ClusterCredential, found bool, leaf *x509.Certificate) verdict {
	serial := ca.SerialHex(leaf.SerialNumber)
	switch {
	case !found:
		return adopt
	case rec.Revoked:
		return lineageRevoked
	case serial == rec.Current:
		return accept
	case serial == rec.Previous && rec.Previous != "" && !rec.CurrentUsed:
		return accept
	case !rec.Since.IsZero() && !leaf.NotBefore.After(rec.Since):
		return earlier
	}
	return reuse
}

// afterUse is the record once serial, accepted, has authenticated a call
// that does not replace it.
func afterUse(rec store.ClusterCredential, serial string) store.ClusterCredential {
	if serial == rec.Current {
		rec.CurrentUsed = true
	}
	return rec
}

// afterRenew is the record rec (the zero value: none) once a Renew
// authenticated by leaf, accepted, issued the credential next: next is
// current, leaf previous.
func afterRenew(rec store.ClusterCredential, k lineageKey, leaf, next *x509.Certificate) store.ClusterCredential {
	return store.ClusterCredential{Cluster: k.cluster, Replica: k.replica, Current: ca.SerialHex(next.SerialNumber),
		Previous: ca.SerialHex(leaf.SerialNumber), Newest: notBefore(next), Since: rec.Since}
}

// afterEnrol is the record old (found false: none) once an enrolment issued
// the credential cred: a new lineage, and everything older is from an
// earlier enrolment.
func afterEnrol(old store.ClusterCredential, found bool, k lineageKey, cred *x509.Certificate) store.ClusterCredential {
	next := store.ClusterCredential{Cluster: k.cluster, Replica: k.replica, Current: ca.SerialHex(cred.SerialNumber), Newest: notBefore(cred)}
	if found {
		next.Since = old.Newest
	}
	return next
}

// afterReuse is the record once a reuse revoked the lineage of rec.
func afterReuse(rec store.ClusterCredential, k lineageKey) store.ClusterCredential {
	return store.ClusterCredential{Cluster: k.cluster, Replica: k.replica, Revoked: true, Newest: rec.Newest, Since: rec.Since}
}

func notBefore(c *x509.Certificate) time.Time { return c.NotBefore.UTC().Truncate(time.Second) }

// maxSwapAttempts bounds the re-reads when a record changes under a write
// that must happen (a lineage revocation, a first use).
const maxSwapAttempts = 3

// admitCredential decides whether leaf, the verified credential of replica
// of cluster c with ID id, may authenticate a call of kind call, and records what the
// call proves. It returns the record the call was admitted on (the zero
// value when the cluster has none): a Renew swaps from it.
func (r *Root) admitCredential(ctx context.Context, c store.Cluster, replica string, id spiffeid.ID, leaf *x509.Certificate, call credentialCall) (store.ClusterCredential, error) {
	serial := ca.SerialHex(leaf.SerialNumber)
	if err := r.checkDenyList(ctx, c, id, serial); err != nil {
		return store.ClusterCredential{}, err
	}
	k := lineageKey{c.Name, replica}
	for range maxSwapAttempts {
		rec, err := r.cfg.Store.ClusterCredential(ctx, c.Name, replica)
		found := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.ClusterCredential{}, fmt.Errorf("%w: credential record of cluster %s: %w", errUnavailable, k, err)
		}
		if call == watchCredential {
			return admitWatch(rec, found, k, serial)
		}
		var next store.ClusterCredential
		var ev store.AuditEvent
		switch judgeCredential(rec, found, leaf) {
		case earlier:
			r.log.WarnContext(ctx, "credential of an earlier enrolment refused", "cluster", c.Name, "replica", replica, "serial", serial,
				"not_before", leaf.NotBefore, "enrolled_after", rec.Since, "peer", peerAddr(ctx))
			return store.ClusterCredential{}, fmt.Errorf("%w: credential serial %s of cluster %s predates its last enrolment",
				errUnauthenticated, serial, k)
		case lineageRevoked:
			return store.ClusterCredential{}, fmt.Errorf(
				"%w: credential serial %s: the credentials of cluster %s were revoked after a reuse; it must enrol again with a new join token",
				errUnauthenticated, serial, k)
		case reuse:
			return store.ClusterCredential{}, r.credentialReused(ctx, c, k, id, rec, serial)
		case adopt:
			if call == renewCredential {
				return store.ClusterCredential{}, nil
			}
			next = store.ClusterCredential{Cluster: c.Name, Replica: replica, Current: serial, CurrentUsed: true, Newest: notBefore(leaf)}
			ev = r.credentialEvent(id, c, serial, "credential.adopt",
				"first credential seen for a cluster enrolled before the root recorded credentials")
		case accept:
			next = afterUse(rec, serial)
			if call == renewCredential || next == rec {
				return rec, nil
			}
			ev = r.credentialEvent(id, c, serial, "credential.confirm",
				fmt.Sprintf("first use of the credential; its predecessor %s is no longer accepted", cmp.Or(rec.Previous, "(none)")))
		}
		if !found {
			rec = store.ClusterCredential{}
		}
		err = r.cfg.Store.SwapClusterCredential(ctx, rec, next, ev)
		switch {
		case err == nil:
			return next, nil
		case !errors.Is(err, store.ErrConflict):
			return store.ClusterCredential{}, fmt.Errorf("%w: record credential use of cluster %s: %w", errUnavailable, k, err)
		}
		// Changed under us (a Renew of the same issuer): judge again.
	}
	return store.ClusterCredential{}, fmt.Errorf("%w: credential record of cluster %s keeps changing", errUnavailable, k)
}

// admitWatch admits a bundle watch with credential serial of cluster
// (record rec, found false: none): the current credential, its
// predecessor, or any credential of a cluster enrolled before the root
// recorded credentials.
func admitWatch(rec store.ClusterCredential, found bool, cluster lineageKey, serial string) (store.ClusterCredential, error) {
	switch {
	case !found:
		return store.ClusterCredential{}, nil
	case rec.Revoked:
		return store.ClusterCredential{}, fmt.Errorf("%w: credential serial %s: the credentials of cluster %s were revoked after a reuse",
			errUnauthenticated, serial, cluster)
	case serial == rec.Current, serial == rec.Previous && rec.Previous != "":
		return rec, nil
	}
	return store.ClusterCredential{}, fmt.Errorf("%w: credential serial %s is neither the current credential of cluster %s nor its predecessor",
		errUnauthenticated, serial, cluster)
}

// checkDenyList refuses a credential whose serial, SPIFFE ID or cluster is
// revoked. It reads the store on every call, so a revocation holds at once,
// on every root replica: credential-authenticated calls are rare.
func (r *Root) checkDenyList(ctx context.Context, c store.Cluster, id spiffeid.ID, serial string) error {
	revs, err := r.cfg.Store.Revocations(ctx, r.cfg.Now())
	if err != nil {
		return fmt.Errorf("%w: read the deny-list: %w", errUnavailable, err)
	}
	for _, e := range revs {
		switch {
		case e.Kind == store.RevokeSerial && e.Value == serial,
			e.Kind == store.RevokeSPIFFEID && e.Value == id.String():
			return fmt.Errorf("%w: credential serial %s of cluster %s is revoked (%s %s)",
				errUnauthenticated, serial, c.Name, e.Kind, e.Value)
		case e.Kind == store.RevokeCluster && e.Value == c.Name:
			return revokedError(c.Name)
		}
	}
	return nil
}

// credentialReused raises the alarm about a reused credential of lineage k
// of cluster c and revokes the lineage, and returns the refusal.
func (r *Root) credentialReused(ctx context.Context, c store.Cluster, k lineageKey, id spiffeid.ID, rec store.ClusterCredential, serial string) error {
	r.reuse.inc(c.Name)
	r.log.ErrorContext(ctx, "credential reuse: a credential of this cluster is held by two parties; revoking every credential of the cluster, which must enrol again with a new join token",
		"cluster", c.Name, "replica", k.replica, "serial", serial, "current_serial", rec.Current, "previous_serial", rec.Previous,
		"current_used", rec.CurrentUsed, "peer", peerAddr(ctx))
	ev := r.credentialEvent(id, c, serial, "credential.reuse", fmt.Sprintf(
		"credential serial %s presented; current %s (used: %t), previous %s; every credential of the cluster revoked, enrol again with a new join token",
		serial, rec.Current, rec.CurrentUsed, cmp.Or(rec.Previous, "(none)")))
	err := r.swapUntilDone(ctx, k, func(old store.ClusterCredential, _ bool) store.ClusterCredential {
		return afterReuse(old, k)
	}, ev)
	if err != nil {
		// Still refused; the next use of the copy or the original tries
		// again.
		r.log.ErrorContext(ctx, "cannot record the revocation of a reused credential's lineage", "cluster", c.Name,
			"replica", k.replica, "error", err)
	}
	return fmt.Errorf("%w: credential serial %s of cluster %s reused (current %s, previous %s)",
		errUnauthenticated, serial, k, rec.Current, rec.Previous)
}

// swapUntilDone replaces the record of lineage k, whatever it holds, by
// next of it (found false: none), with ev.
func (r *Root) swapUntilDone(ctx context.Context, k lineageKey, next func(old store.ClusterCredential, found bool) store.ClusterCredential, ev store.AuditEvent) error {
	var err error
	for range maxSwapAttempts {
		var rec store.ClusterCredential
		rec, err = r.cfg.Store.ClusterCredential(ctx, k.cluster, k.replica)
		found := err == nil
		switch {
		case errors.Is(err, store.ErrNotFound):
			rec = store.ClusterCredential{}
		case err != nil:
			return err
		}
		if err = r.cfg.Store.SwapClusterCredential(ctx, rec, next(rec, found), ev); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return err
}

func (r *Root) credentialEvent(id spiffeid.ID, c store.Cluster, serial, action, detail string) store.AuditEvent {
	return store.AuditEvent{Time: r.cfg.Now(), Actor: id.String(), Action: action, Cluster: c.Name,
		SPIFFEID: id.String(), Serial: serial, Detail: detail}
}
