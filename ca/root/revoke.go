package root

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
)

// Cluster revocation. The root's store holds two kinds of entries:
// store.RevokeCluster (value: the cluster name; never expires) and
// store.RevokeIntermediate (value: the serial of one of that cluster's
// intermediates; expires with it). A revoked cluster's issuer can no longer
// enrol, renew or publish CRLs, and the root's CRLs list its intermediates,
// so that every agent rejects the certificates they issued. There is no way
// back: a revoked cluster enrols again under a new name (a new
// `meshca admin cluster add`), with new intermediates.

// maxReasonBytes bounds the free-text reason of a revocation.
const maxReasonBytes = 1024

// Actors of what the root does on its own.
const actorRoot = "system:root"

// revocations is the part of the deny-list the root acts on, as loaded from
// the store at one re-evaluation. It is never modified once built.
type revocations struct {
	// clusters are the revoked cluster names.
	clusters map[string]bool
	// inters are the revoked intermediates in force, by serial.
	inters map[string]store.Revocation
	// serials are the other certificates the root signed that are revoked
	// (admin certificates, issuer credentials), by serial.
	serials map[string]store.Revocation
	// ids are the revoked SPIFFE IDs.
	ids map[string]bool
}

func newRevocations() revocations {
	return revocations{clusters: map[string]bool{}, inters: map[string]store.Revocation{},
		serials: map[string]store.Revocation{}, ids: map[string]bool{}}
}

// with returns a copy of v with rs added.
func (v revocations) with(rs ...store.Revocation) revocations {
	out := newRevocations()
	for name := range v.clusters {
		out.clusters[name] = true
	}
	for serial, e := range v.inters {
		out.inters[serial] = e
	}
	for serial, e := range v.serials {
		out.serials[serial] = e
	}
	for id := range v.ids {
		out.ids[id] = true
	}
	for _, e := range rs {
		switch e.Kind {
		case store.RevokeCluster:
			out.clusters[e.Value] = true
		case store.RevokeIntermediate:
			out.inters[e.Value] = e
		case store.RevokeSerial:
			out.serials[e.Value] = e
		case store.RevokeSPIFFEID:
			out.ids[e.Value] = true
		}
	}
	return out
}

// revokedIssuer returns why what an issuer of cluster relays under its
// intermediate interSerial (a CRL, a JWT authority) must be dropped:
// "cluster revoked" or "issuer revoked"; empty when neither is.
func (v revocations) revokedIssuer(cluster, interSerial string) string {
	_, interRevoked := v.inters[interSerial]
	switch {
	case v.clusters[cluster]:
		return "cluster revoked"
	case interRevoked:
		return "issuer revoked"
	}
	return ""
}

// loadRevocations reads the deny-list in force at now and revokes every
// intermediate in inters (those valid at now) of a revoked cluster that is
// not revoked yet: one signed by a Renew that raced with the revocation, or
// left over when a Revoke call failed half-way.
func (r *Root) loadRevocations(ctx context.Context, now time.Time, inters []store.Intermediate) (revocations, error) {
	rs, err := r.cfg.Store.Revocations(ctx, now)
	if err != nil {
		return revocations{}, fmt.Errorf("%w: list revocations: %w", grpcx.ErrUnavailable, err)
	}
	revs := newRevocations().with(rs...)
	var added []store.Revocation
	for _, in := range inters {
		if !revs.clusters[in.Cluster] {
			continue
		}
		if _, ok := revs.inters[in.Serial]; ok {
			continue
		}
		e, err := r.revokeIntermediate(ctx, in, "cluster "+in.Cluster+" is revoked", actorRoot, now)
		if err != nil {
			return revocations{}, err
		}
		r.log.WarnContext(ctx, "revoked an intermediate of a revoked cluster", "cluster", in.Cluster, "serial", in.Serial)
		added = append(added, e)
	}
	return revs.with(added...), nil
}

// revokeIntermediate records the revocation of in with its audit event. One
// already in force is returned as it is recorded (without its ID).
func (r *Root) revokeIntermediate(ctx context.Context, in store.Intermediate, reason, actor string, now time.Time) (store.Revocation, error) {
	e := store.Revocation{
		Kind: store.RevokeIntermediate, Value: in.Serial, Cluster: in.Cluster, Reason: reason,
		RevokedBy: actor, RevokedAt: now, ExpiresAt: in.NotAfter,
	}
	out, err := r.cfg.Store.Revoke(ctx, e, store.AuditEvent{
		Time: now, Actor: actor, Action: "intermediate.revoke", Cluster: in.Cluster, Serial: in.Serial,
		Detail: fmt.Sprintf("trust domain %s, not after %s, reason: %s", in.TrustDomain,
			in.NotAfter.UTC().Format(time.RFC3339), reason),
	})
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return e, nil
	case err != nil:
		return store.Revocation{}, fmt.Errorf("%w: revoke intermediate %s of cluster %s: %w", grpcx.ErrUnavailable, in.Serial, in.Cluster, err)
	}
	return out, nil
}

// revoke answers AdminService.Revoke: the root revokes clusters, and
// certificates it signed by serial.
func (r *Root) revoke(ctx context.Context, req *meshcav1.RevokeRequest, actor string) (*meshcav1.RevokeResponse, error) {
	if len(req.GetReason()) > maxReasonBytes {
		return nil, fmt.Errorf("%w: reason of %d bytes (at most %d)", grpcx.ErrInvalidArgument, len(req.GetReason()), maxReasonBytes)
	}
	switch req.GetTarget().(type) {
	case *meshcav1.RevokeRequest_Cluster:
	case *meshcav1.RevokeRequest_Serial:
		return r.revokeSerial(ctx, req.GetSerial(), req.GetReason(), actor)
	case *meshcav1.RevokeRequest_SpiffeId:
		return nil, fmt.Errorf("%w: revoke SPIFFE IDs on the issuer's admin socket: the root revokes clusters and certificates it signed (by serial)",
			grpcx.ErrFailedPrecondition)
	default:
		return nil, fmt.Errorf("%w: nothing to revoke: name a cluster or a serial", grpcx.ErrInvalidArgument)
	}
	name := req.GetCluster()
	if !validClusterName(name) {
		return nil, fmt.Errorf("%w: cluster name %q is not valid", grpcx.ErrInvalidArgument, name)
	}
	c, err := r.cfg.Store.Cluster(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: cluster %s is not registered", grpcx.ErrNotFound, name)
	case err != nil:
		return nil, fmt.Errorf("%w: cluster %s: %w", grpcx.ErrUnavailable, name, err)
	}
	now := r.cfg.Now()
	// The cluster first: from then on the re-evaluation revokes whatever
	// intermediate of it is missing, should this call fail half-way.
	e, err := r.cfg.Store.Revoke(ctx, store.Revocation{
		Kind: store.RevokeCluster, Value: c.Name, Cluster: c.Name, Reason: req.GetReason(), RevokedBy: actor, RevokedAt: now,
	}, store.AuditEvent{
		Time: now, Actor: actor, Action: "cluster.revoke", Cluster: c.Name,
		Detail: fmt.Sprintf("trust domain %s, reason: %s", c.TrustDomain, req.GetReason()),
	})
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return nil, fmt.Errorf("%w: cluster %s is already revoked", grpcx.ErrAlreadyExists, c.Name)
	case err != nil:
		return nil, fmt.Errorf("%w: revoke cluster %s: %w", grpcx.ErrUnavailable, c.Name, err)
	}
	recorded := []store.Revocation{e}
	inters, err := r.cfg.Store.Intermediates(ctx, store.IntermediateFilter{Cluster: c.Name})
	if err != nil {
		err = fmt.Errorf("%w: cluster %s is revoked, listing its intermediates failed (the next re-evaluation revokes them): %w",
			grpcx.ErrUnavailable, c.Name, err)
	}
	for _, in := range inters {
		if !now.Before(in.NotAfter) {
			continue
		}
		ie, ierr := r.revokeIntermediate(ctx, in, req.GetReason(), actor, now)
		if ierr != nil {
			err = ierr
			break
		}
		recorded = append(recorded, ie)
	}
	r.revocationsChanged(ctx, recorded)
	if err != nil {
		return nil, err
	}
	r.log.WarnContext(ctx, "cluster revoked", "actor", actor, "cluster", c.Name, "trust_domain", c.TrustDomain,
		"intermediates", len(recorded)-1, "reason", req.GetReason())
	return &meshcav1.RevokeResponse{Revocation: adminapi.RevocationToProto(e)}, nil
}

// revokeSerial denies one certificate the root signed (an admin
// certificate, an issuer credential, a cluster intermediate), by serial: the
// deny-list refuses it at once and every root CRL lists it. A serial the
// root recorded (admin certificates, intermediates) is revoked until its
// certificate expires; any other (issuer credentials) until everything the
// root signs now has expired.
func (r *Root) revokeSerial(ctx context.Context, raw, reason, actor string) (*meshcav1.RevokeResponse, error) {
	serial, err := adminapi.ParseSerial(raw)
	if err != nil {
		return nil, err // of class grpcx.ErrInvalidArgument
	}
	now := r.cfg.Now()
	e := store.Revocation{Kind: store.RevokeSerial, Value: serial, Reason: reason, RevokedBy: actor, RevokedAt: now,
		ExpiresAt: now.Add(r.longestSigned())}
	ev := store.AuditEvent{Time: now, Actor: actor, Action: "revocation.add", Serial: serial, Detail: "reason: " + reason}
	c, err := r.cfg.Store.Certificate(ctx, serial)
	switch {
	case err == nil && !now.Before(c.NotAfter):
		return nil, fmt.Errorf("%w: certificate %s expired at %s; nothing to revoke", grpcx.ErrFailedPrecondition, serial,
			c.NotAfter.UTC().Format(time.RFC3339))
	case err == nil:
		e.ExpiresAt, e.Cluster, ev.SPIFFEID, ev.Cluster = c.NotAfter, c.Cluster, c.SPIFFEID, c.Cluster
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: certificate %s: %w", grpcx.ErrUnavailable, serial, err)
	default:
		if err := r.markIntermediate(ctx, &e, &ev); err != nil {
			return nil, err
		}
	}
	out, err := r.cfg.Store.Revoke(ctx, e, ev)
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return nil, fmt.Errorf("%w: serial %s is already revoked", grpcx.ErrAlreadyExists, serial)
	case err != nil:
		return nil, fmt.Errorf("%w: revoke serial %s: %w", grpcx.ErrUnavailable, serial, err)
	}
	r.revocationsChanged(ctx, []store.Revocation{out})
	r.log.WarnContext(ctx, "certificate revoked", "actor", actor, "serial", serial, "spiffe_id", ev.SPIFFEID,
		"expires_at", out.ExpiresAt, "reason", reason)
	return &meshcav1.RevokeResponse{Revocation: adminapi.RevocationToProto(out)}, nil
}

// markIntermediate turns e and ev into the revocation of a cluster
// intermediate when serial names one the root recorded, so that the root
// CRLs list it like the intermediates of a revoked cluster.
func (r *Root) markIntermediate(ctx context.Context, e *store.Revocation, ev *store.AuditEvent) error {
	inters, err := r.cfg.Store.Intermediates(ctx, store.IntermediateFilter{})
	if err != nil {
		return fmt.Errorf("%w: list intermediates: %w", grpcx.ErrUnavailable, err)
	}
	for _, in := range inters {
		if in.Serial == e.Value {
			e.Kind, e.Cluster, e.ExpiresAt = store.RevokeIntermediate, in.Cluster, in.NotAfter
			ev.Action, ev.Cluster = "intermediate.revoke", in.Cluster
			ev.Detail = fmt.Sprintf("trust domain %s, not after %s, %s", in.TrustDomain,
				in.NotAfter.UTC().Format(time.RFC3339), ev.Detail)
			return nil
		}
	}
	return nil
}

// longestSigned is the longest life of a certificate the root signs, roots
// aside: a serial revoked now is certainly expired after it.
func (r *Root) longestSigned() time.Duration {
	return max(r.cfg.CredentialTTL, r.cfg.IntermediateTTL, r.cfg.ServingTTL, adminapi.MaxCredentialTTL)
}

// CheckRevoked implements adminapi.RevocationChecker for the root's admin API
// over mutual TLS: it fails when the serial or the SPIFFE ID is revoked,
// and when the deny-list was last read from the store longer ago than
// maxRevocationAge (fail closed).
func (r *Root) CheckRevoked(serial string, id spiffeid.ID) error {
	st := r.state.Load()
	now := r.cfg.Now()
	switch {
	case st.revsAt.IsZero() || now.Sub(st.revsAt) > r.maxRevocationAge():
		return fmt.Errorf("deny-list too old (last read from the store at %s)", st.revsAt.UTC().Format(time.RFC3339))
	case st.revokedIDs[id.String()]:
		return fmt.Errorf("SPIFFE ID %s is revoked", id)
	}
	if _, ok := st.revokedSerials[serial]; ok {
		return fmt.Errorf("serial %s is revoked", serial)
	}
	return nil
}

// maxRevocationAge is how old the deny-list may grow, the store failing,
// before admin certificates are refused: three re-evaluations, at least 30s.
func (r *Root) maxRevocationAge() time.Duration { return max(3*r.cfg.Tick, 30*time.Second) }

// revocationsChanged applies what a Revoke call recorded at once: it
// re-reads the store, or, when that fails, adds recorded to the deny-list
// in memory, and re-signs the root CRLs and publishes.
func (r *Root) revocationsChanged(ctx context.Context, recorded []store.Revocation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadLocked(ctx); err != nil {
		r.log.WarnContext(ctx, "cannot re-read the store after a revocation; applying it from memory", "error", err)
		r.revs = r.revs.with(recorded...)
		r.publishLocked(ctx, r.cfg.Now())
	}
}

// revokedError is the refusal of a revoked cluster's issuer.
func revokedError(cluster string) error {
	return fmt.Errorf("%w: cluster %s is revoked", grpcx.ErrPermissionDenied, cluster)
}
