package rootserver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/admin"
	"github.com/meshca/meshca/store"
)

// JoinTokenPrefix starts every join token, so that a leaked one is easy to
// recognise (and to scan for).
const JoinTokenPrefix = "mjt1."

// adminService is the root's meshcav1.AdminService: clusters, roots and
// cluster revocation, answered here, and the store-backed reads of
// admin.Reads for the revocations (ListRevocations) and the audit log
// (ListAuditEvents, VerifyAudit). Certificate records are kept by the
// issuers, so the certificate calls answer FailedPrecondition.
type adminService struct {
	*admin.Reads
	r *Root
}

var _ meshcav1.AdminServiceServer = (*adminService)(nil)

func newAdminService(r *Root) *adminService {
	return &adminService{Reads: admin.NewReads(readStore(r.cfg.Store), r.cfg.Now, r.log), r: r}
}

// AddCluster implements meshcav1.AdminServiceServer.
func (s *adminService) AddCluster(ctx context.Context, req *meshcav1.AddClusterRequest) (*meshcav1.AddClusterResponse, error) {
	resp, err := s.r.addCluster(ctx, req, admin.Actor(ctx))
	if err != nil {
		return nil, statusOf(ctx, s.r.log, "AddCluster", err)
	}
	return resp, nil
}

// RotateRoot implements meshcav1.AdminServiceServer.
func (s *adminService) RotateRoot(ctx context.Context, req *meshcav1.RotateRootRequest) (*meshcav1.RotateRootResponse, error) {
	if req.GetPropagationDelaySeconds() < 0 {
		err := fmt.Errorf("%w: negative propagation delay", errInvalidArgument)
		return nil, statusOf(ctx, s.r.log, "RotateRoot", err)
	}
	st, err := s.r.rotate(ctx, time.Duration(req.GetPropagationDelaySeconds())*time.Second, admin.Actor(ctx))
	if err != nil {
		return nil, statusOf(ctx, s.r.log, "RotateRoot", err)
	}
	return &meshcav1.RotateRootResponse{Root: rootInfo(st)}, nil
}

// Revoke implements meshcav1.AdminServiceServer: the root revokes whole
// clusters and certificates it signed, by serial; SPIFFE IDs are revoked on
// an issuer's admin socket (FailedPrecondition here).
func (s *adminService) Revoke(ctx context.Context, req *meshcav1.RevokeRequest) (*meshcav1.RevokeResponse, error) {
	resp, err := s.r.revoke(ctx, req, admin.Actor(ctx))
	if err != nil {
		return nil, statusOf(ctx, s.r.log, "Revoke", err)
	}
	return resp, nil
}

// Unrevoke implements meshcav1.AdminServiceServer. It is always
// FailedPrecondition: SPIFFE IDs are unrevoked on an issuer's admin socket,
// and a revoked cluster is never reinstated (it enrols again under a new
// name).
func (s *adminService) Unrevoke(ctx context.Context, _ *meshcav1.UnrevokeRequest) (*meshcav1.UnrevokeResponse, error) {
	err := fmt.Errorf("%w: unrevoke SPIFFE IDs on the issuer's admin socket; a revoked cluster is not reinstated: "+
		"register it again under a new name", errFailedPrecondition)
	return nil, statusOf(ctx, s.r.log, "Unrevoke", err)
}

// ListCertificates implements meshcav1.AdminServiceServer: always
// FailedPrecondition, the root keeps no certificate records.
func (s *adminService) ListCertificates(ctx context.Context, _ *meshcav1.ListCertificatesRequest) (*meshcav1.ListCertificatesResponse, error) {
	return nil, statusOf(ctx, s.r.log, "ListCertificates", errCertificatesElsewhere)
}

// GetCertificate implements meshcav1.AdminServiceServer: always
// FailedPrecondition, the root keeps no certificate records.
func (s *adminService) GetCertificate(ctx context.Context, _ *meshcav1.GetCertificateRequest) (*meshcav1.GetCertificateResponse, error) {
	return nil, statusOf(ctx, s.r.log, "GetCertificate", errCertificatesElsewhere)
}

var errCertificatesElsewhere = fmt.Errorf("%w: certificates are kept by the issuers: use an issuer's admin socket",
	errFailedPrecondition)

// rootReadStore is the root's Store as admin.Reads reads it: revocations
// and the audit log. The certificate methods are never reached (the root
// answers those calls itself).
type rootReadStore struct{ Store }

func (rootReadStore) Certificate(context.Context, string) (store.Certificate, error) {
	return store.Certificate{}, errCertificatesElsewhere
}

func (rootReadStore) Certificates(context.Context, store.CertificateFilter) ([]store.Certificate, error) {
	return nil, errCertificatesElsewhere
}

// AuditVerifier is an optional capability of a Store: with it the admin
// socket answers VerifyAudit (otherwise Unimplemented). Both store backends
// have it.
type AuditVerifier interface {
	VerifyAuditChain(ctx context.Context) error
}

// verifyingReadStore is a rootReadStore whose store can verify the audit
// chain.
type verifyingReadStore struct {
	rootReadStore
	AuditVerifier
}

func readStore(s Store) admin.ReadStore {
	if v, ok := s.(AuditVerifier); ok {
		return verifyingReadStore{rootReadStore{s}, v}
	}
	return rootReadStore{s}
}

// ListRoots implements meshcav1.AdminServiceServer. It lists the roots in
// the bundle, oldest first.
func (s *adminService) ListRoots(context.Context, *meshcav1.ListRootsRequest) (*meshcav1.ListRootsResponse, error) {
	resp := &meshcav1.ListRootsResponse{}
	for _, st := range s.r.Roots() {
		if st.State.InBundle() {
			resp.Roots = append(resp.Roots, rootInfo(st))
		}
	}
	return resp, nil
}

func rootInfo(s ca.RootStatus) *meshcav1.RootInfo {
	return &meshcav1.RootInfo{
		Sha256: fingerprintHex(s.Cert), Subject: s.Cert.Subject.String(),
		NotBeforeUnix: s.Cert.NotBefore.Unix(), NotAfterUnix: s.Cert.NotAfter.Unix(),
		AddedAtUnix: s.AddedAt.Unix(), ActivateAtUnix: s.ActivateAt.Unix(),
		State: string(s.State), Key: s.KeyRef,
	}
}

// clusterNameRE is a DNS label: the name goes into a SPIFFE ID path and a
// certificate subject.
var clusterNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func validClusterName(name string) bool { return clusterNameRE.MatchString(name) }

func (r *Root) addCluster(ctx context.Context, req *meshcav1.AddClusterRequest, actor string) (*meshcav1.AddClusterResponse, error) {
	if !validClusterName(req.GetName()) {
		return nil, fmt.Errorf("%w: cluster name %q: use 1 to 63 lower-case letters, digits and '-', not at either end",
			errInvalidArgument, req.GetName())
	}
	td, err := spiffeid.TrustDomainFromString(req.GetTrustDomain())
	if err != nil || req.GetTrustDomain() == "" {
		return nil, fmt.Errorf("%w: trust domain %q: %w", errInvalidArgument, req.GetTrustDomain(), err)
	}
	if r.state.Load().revoked[req.GetName()] {
		return nil, fmt.Errorf("%w: cluster %s is revoked: register the cluster under a new name", errFailedPrecondition, req.GetName())
	}
	ttl := time.Duration(req.GetTokenTtlSeconds()) * time.Second
	switch {
	case req.GetTokenTtlSeconds() == 0:
		ttl = r.cfg.JoinTokenTTL
	case req.GetTokenTtlSeconds() < 0 || ttl > MaxJoinTokenTTL || ttl/time.Second != time.Duration(req.GetTokenTtlSeconds()):
		return nil, fmt.Errorf("%w: token ttl %ds: must be between 1s and %v", errInvalidArgument,
			req.GetTokenTtlSeconds(), MaxJoinTokenTTL)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	token := JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	now := r.cfg.Now()
	expires := now.Add(ttl).UTC().Truncate(time.Second)
	c := store.Cluster{Name: req.GetName(), TrustDomain: td.Name()}
	err = r.cfg.Store.AddCluster(ctx, c, store.JoinToken{Hash: hashToken(token), Cluster: c.Name, ExpiresAt: expires},
		store.AuditEvent{
			Time: now, Actor: actor, Action: "cluster.add", Cluster: c.Name,
			Detail: fmt.Sprintf("trust domain %s, join token expires at %s", td.Name(), expires.Format(time.RFC3339)),
		})
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return nil, fmt.Errorf("%w: cluster %s: %w", errAlreadyExists, c.Name, err)
	case err != nil:
		return nil, fmt.Errorf("%w: add cluster: %w", errUnavailable, err)
	}
	r.addDomain(ctx, td)
	r.log.InfoContext(ctx, "join token created", "actor", actor, "cluster", c.Name, "trust_domain", td.Name(),
		"expires_at", expires)
	resp := &meshcav1.AddClusterResponse{JoinToken: token, ExpiresAtUnix: expires.Unix()}
	for _, s := range r.Roots() {
		if s.State.InBundle() {
			resp.RootSha256 = append(resp.RootSha256, fingerprintHex(s.Cert))
		}
	}
	return resp, nil
}
