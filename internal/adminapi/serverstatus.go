package adminapi

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/checkpoint"
	"github.com/meshca/meshca/trust"
)

// Roles a server names in its Status.
const (
	RoleRoot   = "root"
	RoleIssuer = "issuer"
)

// Listening are the addresses a server is configured to listen on, as its
// Status reports them; empty fields are not configured (or not known).
type Listening struct {
	// GRPC is the workload-facing (issuer) or issuer-facing (root) gRPC
	// address.
	GRPC string
	// AdminSocket is the path of the Unix admin socket.
	AdminSocket string
	// AdminTLS is the admin API over mutual TLS.
	AdminTLS string
	// Metrics is the Prometheus metrics listener.
	Metrics string
}

// ToProto returns l as the Status message field.
func (l Listening) ToProto() *meshcav1.ListenAddresses {
	return &meshcav1.ListenAddresses{
		GrpcAddr: l.GRPC, AdminSocket: l.AdminSocket, AdminTlsAddr: l.AdminTLS, MetricsAddr: l.Metrics,
	}
}

// StatusStore is what the store-backed part of a Status reads: the audit
// head and the revocations in force. Both store backends have both.
type StatusStore interface {
	AuditHead(ctx context.Context) (store.ChainHead, error)
	Revocations(ctx context.Context, now time.Time) ([]store.Revocation, error)
}

// StoreStatus fills the store-backed fields of resp: the revocations in
// force at now, the audit head, whether the store answered both reads,
// and the newest signed checkpoint in checkpointDir ("" means none is
// looked for). A read that fails marks the store unreachable and is logged
// with its reason; the caller only learns that it failed.
func StoreStatus(ctx context.Context, st StatusStore, checkpointDir string, now time.Time, log *slog.Logger, resp *meshcav1.StatusResponse) {
	resp.Store = &meshcav1.StoreStatus{Reachable: true}
	resp.Audit = &meshcav1.AuditStatus{}
	revs, err := st.Revocations(ctx, now)
	if err == nil {
		resp.Revocations = int64(len(revs))
		var head store.ChainHead
		if head, err = st.AuditHead(ctx); err == nil {
			resp.Audit.HeadSeq, resp.Audit.HeadHash = head.Seq, hex.EncodeToString(head.Hash)
		}
	}
	if err != nil {
		resp.Store.Reachable = false
		log.WarnContext(ctx, "status: store unreachable", "actor", Actor(ctx), "error", err.Error())
	}
	if checkpointDir == "" {
		return
	}
	if cp, err := checkpoint.Latest(checkpointDir); err == nil {
		resp.Audit.LastCheckpoint = &meshcav1.AuditCheckpoint{
			Seq: cp.Head.Seq, Hash: hex.EncodeToString(cp.Head.Hash), Time: timestamppb.New(cp.Time),
		}
	}
}

// CACertificate describes a root or intermediate certificate for Status.
func CACertificate(c *x509.Certificate, state, cluster string) *meshcav1.CACertificate {
	sum := sha256.Sum256(c.Raw)
	return &meshcav1.CACertificate{
		Sha256: hex.EncodeToString(sum[:]), Subject: c.Subject.String(), Serial: trust.SerialHex(c.SerialNumber),
		NotBefore: timestamppb.New(c.NotBefore), NotAfter: timestamppb.New(c.NotAfter), State: state, Cluster: cluster,
	}
}
