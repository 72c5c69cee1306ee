package rootserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca/admin"
	"github.com/meshca/meshca/store"
)

// revokeSerial answers AdminService.Revoke with a serial: one certificate
// the root signed. A recorded cluster intermediate is revoked as such (the
// root CRLs list it); any other serial (an issuer credential, say) enters
// the deny-list as a serial entry that never expires, since the root does
// not record every certificate it signs. A revoked issuer credential
// authenticates nothing from then on: the root reads the deny-list on every
// call, so its cluster's issuer enrols again with a new join token.
func (r *Root) revokeSerial(ctx context.Context, req *meshcav1.RevokeRequest, actor string) (*meshcav1.RevokeResponse, error) {
	serial, err := admin.ParseSerial(req.GetSerial())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidArgument, err)
	}
	now := r.cfg.Now()
	inters, err := r.cfg.Store.Intermediates(ctx, store.IntermediateFilter{})
	if err != nil {
		return nil, fmt.Errorf("%w: list intermediates: %w", errUnavailable, err)
	}
	rev := store.Revocation{Kind: store.RevokeSerial, Value: serial, Reason: req.GetReason(), RevokedBy: actor, RevokedAt: now}
	ev := store.AuditEvent{Time: now, Actor: actor, Action: "certificate.revoke", Serial: serial,
		Detail: "certificate signed by the root, reason: " + req.GetReason()}
	for _, in := range inters {
		if in.Serial == serial {
			rev.Kind, rev.Cluster, rev.ExpiresAt = store.RevokeIntermediate, in.Cluster, in.NotAfter
			ev.Action, ev.Cluster = "intermediate.revoke", in.Cluster
			ev.Detail = fmt.Sprintf("trust domain %s, not after %s, reason: %s", in.TrustDomain,
				in.NotAfter.UTC().Format(time.RFC3339), req.GetReason())
		}
	}
	e, err := r.cfg.Store.Revoke(ctx, rev, ev)
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return nil, fmt.Errorf("%w: serial %s is already revoked", errAlreadyExists, serial)
	case err != nil:
		return nil, fmt.Errorf("%w: revoke serial %s: %w", errUnavailable, serial, err)
	}
	r.revocationsChanged(ctx, []store.Revocation{e})
	r.log.WarnContext(ctx, "certificate revoked", "actor", actor, "serial", serial, "kind", e.Kind,
		"cluster", e.Cluster, "reason", req.GetReason())
	return &meshcav1.RevokeResponse{Revocation: admin.RevocationToProto(e)}, nil
}
