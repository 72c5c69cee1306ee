package issuer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// AdminStore is the cluster's store as the issuer's admin API uses it: the
// certificate records and audit log it reads, and the deny-list it changes.
// Both store backends implement it.
type AdminStore interface {
	adminapi.ReadStore
	store.RevocationStore
	// RecordIssuance is store.Store's: admin certificates are recorded like
	// the certificates the issuer issues.
	RecordIssuance(ctx context.Context, cert store.Certificate, ev store.AuditEvent) error
	// AuditHead is store.AuditHeadReader's: Status reports the head.
	AuditHead(ctx context.Context) (store.ChainHead, error)
}

// Refresher reloads the deny-list at once, so that a revocation made here
// applies on this replica before the next poll (a *DenyList).
type Refresher interface {
	Refresh(ctx context.Context) error
}

// MaxRevokeReason bounds the reason of a revocation, in bytes.
const MaxRevokeReason = 512

// AdminConfig configures an AdminServer.
type AdminConfig struct {
	// TrustDomain of the issuer; only SPIFFE IDs in it are revoked here.
	// Required.
	TrustDomain spiffeid.TrustDomain
	// Cluster is the issuer's cluster: revocations are recorded for it, and
	// only its certificates are revoked by serial here. Required.
	Cluster string
	// Store is the cluster's store, shared by its issuer replicas. Required.
	Store AdminStore
	// DenyList is refreshed after each change. Required.
	DenyList Refresher
	// Root is the issuer's local root, which signs admin certificates
	// (IssueAdminCredential) with its current CA; nil for an issuer under
	// the central root, which has no root key: admin certificates are then
	// issued on the root.
	Root CASource
	// MaxRequestBytes bounds a request message; zero means 64 KiB.
	MaxRequestBytes int
	// Issuer is the issuer whose roots and intermediates Status reports;
	// nil means Status reports none.
	Issuer *Issuer
	// Bundles is the bundle the issuer serves its agents, for Status's
	// bundle sequence; nil means the issuer's own (that of Issuer).
	Bundles BundleSource
	// Upstream is the central root's address, for Status; empty for an
	// issuer with a local root.
	Upstream string
	// Listening are the addresses Status reports.
	Listening adminapi.Listening
	// CheckpointDir is where the audit checkpoints are signed, for
	// Status's last checkpoint; empty means Status reports none.
	CheckpointDir string
	// Now is the admin server's clock; nil means time.Now. It dates admin
	// credentials and audit events and is the "now" of the read calls
	// (active certificates, revocations, the audit window). It exists
	// because its tests serve on a real Unix socket over a store holding
	// certificates dated at a fixed instant; open Store on the same clock.
	Now func() time.Time
	// Logger receives one line per change and per failed call; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c AdminConfig) Validate() error {
	switch {
	case c.TrustDomain.IsZero():
		return errors.New("issuer admin: trust domain is required")
	case c.Cluster == "":
		return errors.New("issuer admin: cluster is required")
	case c.Store == nil:
		return errors.New("issuer admin: store is required")
	case c.DenyList == nil:
		return errors.New("issuer admin: deny-list is required")
	case c.MaxRequestBytes < 0:
		return fmt.Errorf("issuer admin: negative max request size %d", c.MaxRequestBytes)
	}
	return nil
}

// AdminServer is an issuer's meshca.v1.AdminService: revocation of its
// cluster's certificate serials and of SPIFFE IDs of its trust domain
// (recorded in the cluster's store with an audit event naming the actor,
// then applied to the deny-list at once), and the read calls of
// adminapi.Reads; and, with a local root, admin certificates
// (IssueAdminCredential). The root's calls (AddCluster, RotateRoot,
// ListRoots, cluster revocation) answer FailedPrecondition naming the root.
//
// Serve it with ServeUnix on the admin socket and, optionally, ServeMTLS
// for configured admin SPIFFE IDs; both may run at once. It is a
// meshcav1.AdminServiceServer, so it can also be registered on a server of
// the caller's own. It is safe for concurrent use.
type AdminServer struct {
	*adminapi.Reads
	cfg AdminConfig
}

var _ meshcav1.AdminServiceServer = (*AdminServer)(nil)

// NewAdminServer returns the admin API for cfg.
func NewAdminServer(cfg AdminConfig) (*AdminServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &AdminServer{Reads: adminapi.NewReads(cfg.Store, cfg.Now, cfg.Logger), cfg: cfg}, nil
}

// ServeUnix serves the admin API on lis, a Unix socket from
// adminapi.ListenUnix whose file permissions guard it, until ctx ends; the
// actor of each change is the peer's Unix user. It closes lis, and returns
// nil once ctx ends and in-flight calls have had up to 5 s to finish.
func (s *AdminServer) ServeUnix(ctx context.Context, lis net.Listener) error {
	return s.serve(ctx, lis, grpc.Creds(adminapi.UnixCredentials()))
}

// ServeMTLS serves the admin API over mutual TLS on lis until ctx ends,
// to the admin SPIFFE IDs m allows; the actor of each change is
// "spiffe:<SPIFFE ID>". It stops as ServeUnix does.
func (s *AdminServer) ServeMTLS(ctx context.Context, lis net.Listener, m *adminapi.MTLS) error {
	return s.serve(ctx, m.Listener(lis), m.ServerOptions()...)
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c AdminConfig) withDefaults() AdminConfig {
	c.MaxRequestBytes = cmp.Or(c.MaxRequestBytes, defaultAdminMaxRequestBytes)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// defaultAdminMaxRequestBytes bounds an admin request when
// AdminConfig.MaxRequestBytes is zero.
const defaultAdminMaxRequestBytes = 64 << 10

// adminGracePeriod is how long in-flight admin calls get to finish at
// shutdown.
const adminGracePeriod = 5 * time.Second

// serve accepts connections on lis until ctx is cancelled, then stops
// gracefully: in-flight calls get adminGracePeriod. It closes lis and
// returns nil on a clean shutdown.
func (s *AdminServer) serve(ctx context.Context, lis net.Listener, opts ...grpc.ServerOption) error {
	srv := grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes))...)
	meshcav1.RegisterAdminServiceServer(srv, s)
	if err := grpcx.Serve(ctx, srv, lis, adminGracePeriod, nil); err != nil {
		return fmt.Errorf("issuer admin server: %w", err)
	}
	return nil
}

// Revoke implements meshcav1.AdminServiceServer. A serial must be one of
// this cluster's certificates that has not expired; the revocation ends
// with it. A SPIFFE ID must be a workload's of this trust domain; its
// certificates are revoked until they expire, and new ones are refused
// until Unrevoke.
func (s *AdminServer) Revoke(ctx context.Context, req *meshcav1.RevokeRequest) (*meshcav1.RevokeResponse, error) {
	rev, err := s.revoke(ctx, req, adminapi.Actor(ctx))
	if err != nil {
		return nil, s.status(ctx, "Revoke", err)
	}
	return &meshcav1.RevokeResponse{Revocation: adminapi.RevocationToProto(rev)}, nil
}

func (s *AdminServer) revoke(ctx context.Context, req *meshcav1.RevokeRequest, actor string) (store.Revocation, error) {
	reason, err := checkReason(req.GetReason())
	if err != nil {
		return store.Revocation{}, err
	}
	now := s.cfg.Now()
	r := store.Revocation{Cluster: s.cfg.Cluster, Reason: reason, RevokedBy: actor, RevokedAt: now}
	ev := store.AuditEvent{Time: now, Actor: actor, Action: "revocation.add", Cluster: s.cfg.Cluster, Detail: reason}
	switch t := req.GetTarget().(type) {
	case *meshcav1.RevokeRequest_Serial:
		c, err := s.revocableCert(ctx, t.Serial, now)
		if err != nil {
			return store.Revocation{}, err
		}
		r.Kind, r.Value, r.ExpiresAt = store.RevokeSerial, c.Serial, c.NotAfter
		ev.Serial, ev.SPIFFEID = c.Serial, c.SPIFFEID
	case *meshcav1.RevokeRequest_SpiffeId:
		id, err := s.workloadID(t.SpiffeId)
		if err != nil {
			return store.Revocation{}, err
		}
		r.Kind, r.Value = store.RevokeSPIFFEID, id.String()
		ev.SPIFFEID = id.String()
	case *meshcav1.RevokeRequest_Cluster:
		return store.Revocation{}, errOnRoot("cluster revocation")
	default:
		return store.Revocation{}, fmt.Errorf("%w: name a serial or a SPIFFE ID to revoke", grpcx.ErrInvalidArgument)
	}
	rev, err := s.cfg.Store.Revoke(ctx, r, ev)
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return store.Revocation{}, fmt.Errorf("%w: %s %s is already revoked", grpcx.ErrAlreadyExists, r.Kind, r.Value)
	case err != nil:
		return store.Revocation{}, fmt.Errorf("%w: revoke %s %s: %w", grpcx.ErrUnavailable, r.Kind, r.Value, err)
	}
	s.cfg.Logger.InfoContext(ctx, "revoked", "kind", rev.Kind, "value", rev.Value, "cluster", rev.Cluster,
		"actor", actor, "reason", rev.Reason, "expires_at", rev.ExpiresAt)
	s.refresh(ctx)
	return rev, nil
}

// revocableCert returns the record of serial if this cluster issued it and
// it has not expired at now.
func (s *AdminServer) revocableCert(ctx context.Context, serial string, now time.Time) (store.Certificate, error) {
	serial, err := adminapi.ParseSerial(serial)
	if err != nil {
		return store.Certificate{}, err
	}
	c, err := s.cfg.Store.Certificate(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Certificate{}, fmt.Errorf("%w: no certificate with serial %s in cluster %s",
			grpcx.ErrNotFound, serial, s.cfg.Cluster)
	case err != nil:
		return store.Certificate{}, fmt.Errorf("%w: certificate %s: %w", grpcx.ErrUnavailable, serial, err)
	case c.Cluster != s.cfg.Cluster:
		return store.Certificate{}, fmt.Errorf("%w: certificate %s was issued in cluster %s; revoke it on that cluster's issuer",
			grpcx.ErrFailedPrecondition, serial, c.Cluster)
	case !now.Before(c.NotAfter):
		return store.Certificate{}, fmt.Errorf("%w: certificate %s expired at %s; nothing to revoke",
			grpcx.ErrFailedPrecondition, serial, c.NotAfter.Format(time.RFC3339))
	}
	return c, nil
}

// Unrevoke implements meshcav1.AdminServiceServer: it lifts the revocation
// in force of a SPIFFE ID of this trust domain, or answers NotFound. Only
// new issuance is allowed again: the certificates the revocation covered
// stay revoked, by serial, until they expire (store.RevocationStore).
func (s *AdminServer) Unrevoke(ctx context.Context, req *meshcav1.UnrevokeRequest) (*meshcav1.UnrevokeResponse, error) {
	if err := s.unrevoke(ctx, req, adminapi.Actor(ctx)); err != nil {
		return nil, s.status(ctx, "Unrevoke", err)
	}
	return &meshcav1.UnrevokeResponse{}, nil
}

func (s *AdminServer) unrevoke(ctx context.Context, req *meshcav1.UnrevokeRequest, actor string) error {
	if req.GetSpiffeId() == "" {
		return fmt.Errorf("%w: name the SPIFFE ID whose revocation to lift", grpcx.ErrInvalidArgument)
	}
	id, err := s.workloadID(req.GetSpiffeId())
	if err != nil {
		return err
	}
	err = s.cfg.Store.Unrevoke(ctx, store.RevokeSPIFFEID, id.String(), store.AuditEvent{
		Time: s.cfg.Now(), Actor: actor, Action: "revocation.lift", Cluster: s.cfg.Cluster, SPIFFEID: id.String(),
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: no revocation of %s in force", grpcx.ErrNotFound, id)
	case err != nil:
		return fmt.Errorf("%w: unrevoke %s: %w", grpcx.ErrUnavailable, id, err)
	}
	s.cfg.Logger.InfoContext(ctx, "revocation lifted; the certificates it revoked stay revoked until they expire",
		"spiffe_id", id.String(), "cluster", s.cfg.Cluster, "actor", actor)
	s.refresh(ctx)
	return nil
}

// refreshTimeout bounds the deny-list reload after a change.
const refreshTimeout = 5 * time.Second

// refresh reloads the deny-list after a change, even if the caller has
// gone: the change is recorded, and this replica should apply it now. A
// failure is only logged: the change stands, and the deny-list's next poll
// (or its staleness limit) takes over.
func (s *AdminServer) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	if err := s.cfg.DenyList.Refresh(ctx); err != nil {
		s.cfg.Logger.WarnContext(ctx, "deny-list refresh after an admin change failed; the next poll applies it",
			"error", err.Error())
	}
}

// workloadID parses a SPIFFE ID this issuer could have issued: in its
// trust domain, with a path.
func (s *AdminServer) workloadID(raw string) (spiffeid.ID, error) {
	id, err := adminapi.ParseSPIFFEID(raw)
	switch {
	case err != nil:
		return spiffeid.ID{}, err
	case id.TrustDomain() != s.cfg.TrustDomain:
		return spiffeid.ID{}, fmt.Errorf("%w: %s is not in trust domain %s; revoke it on its own cluster's issuer",
			grpcx.ErrInvalidArgument, id, s.cfg.TrustDomain.Name())
	case id.Path() == "":
		return spiffeid.ID{}, fmt.Errorf("%w: %s names a trust domain, not a workload", grpcx.ErrInvalidArgument, id)
	}
	return id, nil
}

// checkReason returns the trimmed reason if it fits the audit log and a
// table: at most MaxRevokeReason bytes of UTF-8 without control
// characters.
func checkReason(reason string) (string, error) {
	reason = strings.TrimSpace(reason)
	switch {
	case len(reason) > MaxRevokeReason:
		return "", fmt.Errorf("%w: reason longer than %d bytes", grpcx.ErrInvalidArgument, MaxRevokeReason)
	case !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl):
		return "", fmt.Errorf("%w: reason must be printable UTF-8 on one line", grpcx.ErrInvalidArgument)
	}
	return reason, nil
}

// errOnRoot is the answer to the calls only the root serves.
func errOnRoot(what string) error {
	return fmt.Errorf("%w: %s is done on the root's admin socket (meshca root), not on an issuer's",
		grpcx.ErrFailedPrecondition, what)
}

// AddCluster implements meshcav1.AdminServiceServer: FailedPrecondition.
func (s *AdminServer) AddCluster(ctx context.Context, _ *meshcav1.AddClusterRequest) (*meshcav1.AddClusterResponse, error) {
	return nil, s.status(ctx, "AddCluster", errOnRoot("adding a cluster"))
}

// RotateRoot implements meshcav1.AdminServiceServer: FailedPrecondition.
func (s *AdminServer) RotateRoot(ctx context.Context, _ *meshcav1.RotateRootRequest) (*meshcav1.RotateRootResponse, error) {
	return nil, s.status(ctx, "RotateRoot", errOnRoot("root rotation"))
}

// ListRoots implements meshcav1.AdminServiceServer: FailedPrecondition.
func (s *AdminServer) ListRoots(ctx context.Context, _ *meshcav1.ListRootsRequest) (*meshcav1.ListRootsResponse, error) {
	return nil, s.status(ctx, "ListRoots", errOnRoot("listing roots"))
}

// status is the one place the issuer's admin errors become gRPC statuses
// (through adminapi.Status, which the read calls use too).
func (s *AdminServer) status(ctx context.Context, method string, err error) error {
	return adminapi.Status(ctx, s.cfg.Logger, method, err)
}

// IssueAdminCredential implements meshcav1.AdminServiceServer: on the Unix
// admin socket only, an issuer with a local root signs an admin certificate
// with it, recorded for its cluster (so that `meshca admin revoke --serial`
// here revokes it). An issuer under the central root answers
// FailedPrecondition: it holds no root key, and an admin certificate must
// not come from a cluster intermediate.
func (s *AdminServer) IssueAdminCredential(ctx context.Context, req *meshcav1.IssueAdminCredentialRequest) (*meshcav1.IssueAdminCredentialResponse, error) {
	resp, err := s.issueAdminCredential(ctx, req, adminapi.Actor(ctx), adminapi.OnUnixSocket(ctx))
	if err != nil {
		return nil, s.status(ctx, "IssueAdminCredential", err)
	}
	return resp, nil
}

func (s *AdminServer) issueAdminCredential(ctx context.Context, req *meshcav1.IssueAdminCredentialRequest, actor string, onSocket bool) (*meshcav1.IssueAdminCredentialResponse, error) {
	switch {
	case !onSocket:
		return nil, fmt.Errorf("%w: admin credentials are issued on the Unix admin socket only", grpcx.ErrPermissionDenied)
	case s.cfg.Root == nil:
		return nil, errOnRoot("issuing admin credentials (this issuer has no root key)")
	}
	cr, err := adminapi.ParseCredentialRequest(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", grpcx.ErrInvalidArgument, err)
	}
	now := s.cfg.Now()
	root := s.cfg.Root.CA()
	cert, err := adminapi.SignCredential(root, cr, now)
	if err != nil {
		return nil, err
	}
	serial := trust.SerialHex(cert.SerialNumber)
	sum := sha256.Sum256(cert.Raw)
	err = s.cfg.Store.RecordIssuance(ctx, store.Certificate{
		Serial: serial, SPIFFEID: cr.ID.String(), Cluster: s.cfg.Cluster, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		Fingerprint: hex.EncodeToString(sum[:]),
	}, store.AuditEvent{
		Time: now, Actor: actor, Action: "admin_credential.issue", Cluster: s.cfg.Cluster, SPIFFEID: cr.ID.String(),
		Serial: serial, Detail: "not after " + cert.NotAfter.UTC().Format(time.RFC3339),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: record admin credential: %w", grpcx.ErrUnavailable, err)
	}
	s.cfg.Logger.InfoContext(ctx, "admin credential issued", "actor", actor, "spiffe_id", cr.ID.String(), "serial", serial,
		"cluster", s.cfg.Cluster, "not_after", cert.NotAfter)
	return &meshcav1.IssueAdminCredentialResponse{
		Certificate: cert.Raw, Roots: [][]byte{root.Certificate.Raw}, Serial: serial,
	}, nil
}
