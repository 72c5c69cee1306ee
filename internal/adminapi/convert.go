package adminapi

import (
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/store"
)

// certificateToProto converts a certificate record for the admin API.
func certificateToProto(c store.Certificate) *meshcav1.Certificate {
	return &meshcav1.Certificate{
		Serial: c.Serial, SpiffeId: c.SPIFFEID, Cluster: c.Cluster,
		NotBefore: timestamp(c.NotBefore), NotAfter: timestamp(c.NotAfter),
		Sha256: c.Fingerprint, PodUid: c.PodUID,
	}
}

// RevocationToProto converts a revocation for the admin API; a zero
// ExpiresAt (never) leaves expires_at unset.
func RevocationToProto(r store.Revocation) *meshcav1.Revocation {
	return &meshcav1.Revocation{
		Kind: r.Kind, Value: r.Value, Cluster: r.Cluster, Reason: r.Reason, RevokedBy: r.RevokedBy,
		RevokedAt: timestamp(r.RevokedAt), ExpiresAt: timestamp(r.ExpiresAt),
	}
}

// auditEventToProto converts an audit event for the admin API.
func auditEventToProto(ev store.AuditEvent) *meshcav1.AuditEvent {
	return &meshcav1.AuditEvent{
		Seq: ev.Seq, Time: timestamp(ev.Time), Actor: ev.Actor, Action: ev.Action, Cluster: ev.Cluster,
		SpiffeId: ev.SPIFFEID, Serial: ev.Serial, Detail: ev.Detail, HashHex: hex.EncodeToString(ev.Hash),
	}
}

// timestamp is t as a protobuf timestamp, nil for the zero time.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
