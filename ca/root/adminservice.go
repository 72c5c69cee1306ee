package root

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// JoinTokenPrefix starts every join token, so that a leaked one is easy to
// recognise (and to scan for).
const JoinTokenPrefix = "mjt1."

// adminService is the root's meshcav1.AdminService: clusters, roots and
// cluster revocation, answered here, and the store-backed reads of
// adminapi.Reads for the revocations (ListRevocations) and the audit log
// (ListAuditEvents, VerifyAudit). Certificate records are kept by the
// issuers, so the certificate calls answer FailedPrecondition.
type adminService struct {
	*adminapi.Reads
	r *Root
}

var _ meshcav1.AdminServiceServer = (*adminService)(nil)

func newAdminService(r *Root) *adminService {
	return &adminService{Reads: adminapi.NewReads(readStore(r.cfg.Store), r.cfg.Now, r.log), r: r}
}

// AddCluster implements meshcav1.AdminServiceServer.
func (s *adminService) AddCluster(ctx context.Context, req *meshcav1.AddClusterRequest) (*meshcav1.AddClusterResponse, error) {
	resp, err := s.r.addCluster(ctx, req, adminapi.Actor(ctx))
	if err != nil {
		return nil, s.status(ctx, "AddCluster", err)
	}
	return resp, nil
}

// RotateRoot implements meshcav1.AdminServiceServer.
func (s *adminService) RotateRoot(ctx context.Context, req *meshcav1.RotateRootRequest) (*meshcav1.RotateRootResponse, error) {
	if req.GetPropagationDelaySeconds() < 0 {
		err := fmt.Errorf("%w: negative propagation delay", grpcx.ErrInvalidArgument)
		return nil, s.status(ctx, "RotateRoot", err)
	}
	st, err := s.r.rotate(ctx, time.Duration(req.GetPropagationDelaySeconds())*time.Second, adminapi.Actor(ctx), req.GetForce())
	if err != nil {
		return nil, s.status(ctx, "RotateRoot", err)
	}
	return &meshcav1.RotateRootResponse{Root: rootInfo(st)}, nil
}

// Revoke implements meshcav1.AdminServiceServer: the root revokes whole
// clusters and certificates it signed, by serial; SPIFFE IDs are revoked on
// an issuer's admin socket (FailedPrecondition here).
func (s *adminService) Revoke(ctx context.Context, req *meshcav1.RevokeRequest) (*meshcav1.RevokeResponse, error) {
	resp, err := s.r.revoke(ctx, req, adminapi.Actor(ctx))
	if err != nil {
		return nil, s.status(ctx, "Revoke", err)
	}
	return resp, nil
}

// Unrevoke implements meshcav1.AdminServiceServer. It is always
// FailedPrecondition: SPIFFE IDs are unrevoked on an issuer's admin socket,
// and a revoked cluster is never reinstated (it enrols again under a new
// name).
func (s *adminService) Unrevoke(ctx context.Context, _ *meshcav1.UnrevokeRequest) (*meshcav1.UnrevokeResponse, error) {
	err := fmt.Errorf("%w: unrevoke SPIFFE IDs on the issuer's admin socket; a revoked cluster is not reinstated: "+
		"register it again under a new name", grpcx.ErrFailedPrecondition)
	return nil, s.status(ctx, "Unrevoke", err)
}

// ListCertificates implements meshcav1.AdminServiceServer: always
// FailedPrecondition, the root keeps no certificate records.
func (s *adminService) ListCertificates(ctx context.Context, _ *meshcav1.ListCertificatesRequest) (*meshcav1.ListCertificatesResponse, error) {
	return nil, s.status(ctx, "ListCertificates", errCertificatesElsewhere)
}

// GetCertificate implements meshcav1.AdminServiceServer: always
// FailedPrecondition, the root keeps no certificate records.
func (s *adminService) GetCertificate(ctx context.Context, _ *meshcav1.GetCertificateRequest) (*meshcav1.GetCertificateResponse, error) {
	return nil, s.status(ctx, "GetCertificate", errCertificatesElsewhere)
}

var errCertificatesElsewhere = fmt.Errorf("%w: certificates are kept by the issuers: use an issuer's admin socket",
	grpcx.ErrFailedPrecondition)

// rootReadStore is the root's Store as adminapi.Reads reads it: revocations
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
	// VerifyAuditHead walks the whole chain and returns the head as far as
	// it verified.
	VerifyAuditHead(ctx context.Context) (store.ChainHead, error)
}

// verifyingReadStore is a rootReadStore whose store can verify the audit
// chain.
type verifyingReadStore struct {
	rootReadStore
	AuditVerifier
}

func readStore(s Store) adminapi.ReadStore {
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

func rootInfo(s RootStatus) *meshcav1.RootInfo {
	return &meshcav1.RootInfo{
		Sha256: fingerprintHex(s.Cert), Subject: s.Cert.Subject.String(),
		NotBefore: timestamppb.New(s.Cert.NotBefore), NotAfter: timestamppb.New(s.Cert.NotAfter),
		AddedAt: timestamppb.New(s.AddedAt), ActivateAt: timestamppb.New(s.ActivateAt),
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
			grpcx.ErrInvalidArgument, req.GetName())
	}
	td, err := spiffeid.TrustDomainFromString(req.GetTrustDomain())
	if err != nil || req.GetTrustDomain() == "" {
		return nil, fmt.Errorf("%w: trust domain %q: %w", grpcx.ErrInvalidArgument, req.GetTrustDomain(), err)
	}
	if r.state.Load().revoked[req.GetName()] {
		return nil, fmt.Errorf("%w: cluster %s is revoked: register the cluster under a new name", grpcx.ErrFailedPrecondition, req.GetName())
	}
	// One registration at a time: the trust domain check below and the
	// write must not interleave with another's.
	r.addMu.Lock()
	defer r.addMu.Unlock()
	sharing, err := r.holders(ctx, td, req.GetName())
	if err != nil {
		return nil, err
	}
	if len(sharing) > 0 && !req.GetShareTrustDomain() {
		return nil, fmt.Errorf("%w: trust domain %s is held by cluster %s: their issuers could mint each other's identities; "+
			"ask for it explicitly (share trust domain) if that is meant", grpcx.ErrFailedPrecondition, td.Name(), strings.Join(sharing, ", "))
	}
	dnsNames, err := r.clusterDNSNames(ctx, req)
	if err != nil {
		return nil, err
	}
	replicas := int(max(req.GetReplicas(), 1))
	if replicas > store.MaxReplicas {
		return nil, fmt.Errorf("%w: %d replicas: at most %d", grpcx.ErrInvalidArgument, replicas, store.MaxReplicas)
	}
	ttl, err := r.joinTokenTTL(req.GetTokenTtlSeconds(), replicas)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	token := JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	now := r.cfg.Now()
	expires := now.Add(ttl).UTC().Truncate(time.Second)
	c := store.Cluster{Name: req.GetName(), TrustDomain: td.Name(), DNSNames: dnsNames}
	detail := fmt.Sprintf("trust domain %s, join token expires at %s", td.Name(), expires.Format(time.RFC3339))
	if replicas > 1 {
		detail += fmt.Sprintf(", shared by up to %d issuer replicas", replicas)
	}
	if len(sharing) > 0 {
		detail += ", trust domain shared with cluster " + strings.Join(sharing, ", ")
	}
	if len(dnsNames) > 0 {
		detail += ", workload DNS names " + strings.Join(dnsNames, " ")
	}
	err = r.cfg.Store.AddCluster(ctx, c, store.JoinToken{Hash: hashToken(token), Cluster: c.Name, ExpiresAt: expires, Replicas: replicas},
		store.AuditEvent{Time: now, Actor: actor, Action: "cluster.add", Cluster: c.Name, Detail: detail})
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return nil, fmt.Errorf("%w: cluster %s: %w", grpcx.ErrAlreadyExists, c.Name, err)
	case err != nil:
		return nil, fmt.Errorf("%w: add cluster: %w", grpcx.ErrUnavailable, err)
	}
	if req.GetReplaceDnsNames() {
		if err := r.replaceDNSNames(ctx, c, actor, now); err != nil {
			return nil, err
		}
	}
	r.addDomain(ctx, td)
	r.log.InfoContext(ctx, "join token created", "actor", actor, "cluster", c.Name, "trust_domain", td.Name(),
		"expires_at", expires, "replicas", replicas, "shares_trust_domain_with", sharing)
	resp := &meshcav1.AddClusterResponse{JoinToken: token, ExpiresAt: timestamppb.New(expires)}
	for _, s := range r.Roots() {
		if s.State.InBundle() {
			resp.RootSha256 = append(resp.RootSha256, fingerprintHex(s.Cert))
		}
	}
	return resp, nil
}

// joinTokenTTL is the life of a join token asked for with seconds (zero:
// the configured default) for a token of replicas.
func (r *Root) joinTokenTTL(seconds int64, replicas int) (time.Duration, error) {
	maxTTL := maxJoinTokenTTL
	if replicas > 1 {
		maxTTL = maxReplicaJoinTokenTTL
	}
	ttl := time.Duration(seconds) * time.Second
	switch {
	case seconds == 0:
		return r.cfg.JoinTokenTTL, nil
	case seconds < 0 || ttl > maxTTL || ttl/time.Second != time.Duration(seconds):
		return 0, fmt.Errorf("%w: token ttl %ds: must be between 1s and %v", grpcx.ErrInvalidArgument, seconds, maxTTL)
	}
	return ttl, nil
}

// keepsDNSNames refuses DNS names given for a registered cluster whose
// names differ, unless replace is set: they would not be stored, and an
// administrator must not believe they were.
func (r *Root) keepsDNSNames(ctx context.Context, name string, dnsNames []string, replace bool) error {
	if replace || len(dnsNames) == 0 {
		return nil
	}
	c, err := r.cfg.Store.Cluster(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("%w: read cluster %s: %w", grpcx.ErrUnavailable, name, err)
	case !slices.Equal(c.DNSNames, dnsNames):
		return fmt.Errorf("%w: cluster %s is registered with DNS names %q: to change them, replace them explicitly (replace DNS names)",
			grpcx.ErrFailedPrecondition, name, c.DNSNames)
	}
	return nil
}

// replaceDNSNames makes c.DNSNames the registered cluster's workload DNS
// names, audited; its next intermediate admits them.
func (r *Root) replaceDNSNames(ctx context.Context, c store.Cluster, actor string, now time.Time) error {
	err := r.cfg.Store.SetClusterDNSNames(ctx, c.Name, c.DNSNames, store.AuditEvent{Time: now, Actor: actor, Action: "cluster.dns_names",
		Cluster: c.Name, Detail: "workload DNS names: " + strings.Join(c.DNSNames, " ")})
	if err != nil {
		return fmt.Errorf("%w: set DNS names of cluster %s: %w", grpcx.ErrUnavailable, c.Name, err)
	}
	return nil
}

// clusterDNSNames checks the workload DNS names req gives its cluster:
// valid, unique, none beneath another, none of them the root's own serving
// names (or a parent domain of one), which no cluster may vouch for, and,
// for a registered cluster, its own unless they replace them
// (keepsDNSNames).
func (r *Root) clusterDNSNames(ctx context.Context, req *meshcav1.AddClusterRequest) ([]string, error) {
	names := req.GetDnsNames()
	if err := store.ValidateClusterDNSNames(names); err != nil {
		return nil, fmt.Errorf("%w: %w", grpcx.ErrInvalidArgument, err)
	}
	for _, n := range names {
		if r.isOwnHost(n) {
			return nil, fmt.Errorf("%w: DNS name %q is the root's own (or contains one of its serving names)", grpcx.ErrInvalidArgument, n)
		}
		for _, o := range names {
			if strings.HasSuffix(o, "."+n) {
				return nil, fmt.Errorf("%w: DNS name %q is beneath %q: a name constraint cannot admit both exactly", grpcx.ErrInvalidArgument, o, n)
			}
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	if err := r.keepsDNSNames(ctx, req.GetName(), names, req.GetReplaceDnsNames()); err != nil {
		return nil, err
	}
	return names, nil
}

// holders returns the names of the registered clusters other than name in
// trust domain td, sorted. A store without ClusterLister (both backends
// have it) is asked for the clusters with an intermediate instead.
func (r *Root) holders(ctx context.Context, td spiffeid.TrustDomain, name string) ([]string, error) {
	var clusters []store.Cluster
	if lister, ok := r.cfg.Store.(ClusterLister); ok {
		var err error
		if clusters, err = lister.Clusters(ctx); err != nil {
			return nil, fmt.Errorf("%w: list clusters: %w", grpcx.ErrUnavailable, err)
		}
	} else {
		inters, err := r.cfg.Store.Intermediates(ctx, store.IntermediateFilter{})
		if err != nil {
			return nil, fmt.Errorf("%w: list intermediates: %w", grpcx.ErrUnavailable, err)
		}
		for _, in := range inters {
			clusters = append(clusters, store.Cluster{Name: in.Cluster, TrustDomain: in.TrustDomain})
		}
	}
	var out []string
	for _, c := range clusters {
		if c.Name != name && c.TrustDomain == td.Name() {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// IssueAdminCredential implements meshcav1.AdminServiceServer: on the Unix
// admin socket only, it signs an admin certificate with the active root and
// records it.
func (s *adminService) IssueAdminCredential(ctx context.Context, req *meshcav1.IssueAdminCredentialRequest) (*meshcav1.IssueAdminCredentialResponse, error) {
	resp, err := s.r.issueAdminCredential(ctx, req, adminapi.Actor(ctx), adminapi.OnUnixSocket(ctx))
	if err != nil {
		return nil, s.status(ctx, "IssueAdminCredential", err)
	}
	return resp, nil
}

func (r *Root) issueAdminCredential(ctx context.Context, req *meshcav1.IssueAdminCredentialRequest, actor string, onSocket bool) (*meshcav1.IssueAdminCredentialResponse, error) {
	if !onSocket {
		return nil, fmt.Errorf("%w: admin credentials are issued on the Unix admin socket only", grpcx.ErrPermissionDenied)
	}
	cr, err := adminapi.ParseCredentialRequest(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", grpcx.ErrInvalidArgument, err)
	}
	if strings.HasPrefix(cr.ID.Path(), credentialPathPrefix) {
		// It would be a valid issuer credential of that cluster.
		return nil, fmt.Errorf("%w: SPIFFE ID %s is an issuer credential's", grpcx.ErrInvalidArgument, cr.ID)
	}
	st := r.state.Load()
	if st.active == nil {
		return nil, errNoActiveRoot
	}
	now := r.cfg.Now()
	cert, err := adminapi.SignCredential(st.active, cr, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", grpcx.ErrUnavailable, err)
	}
	serial := trust.SerialHex(cert.SerialNumber)
	err = r.cfg.Store.RecordIssuance(ctx, store.Certificate{
		Serial: serial, SPIFFEID: cr.ID.String(), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		Fingerprint: fingerprintHex(cert),
	}, store.AuditEvent{
		Time: now, Actor: actor, Action: "admin_credential.issue", SPIFFEID: cr.ID.String(), Serial: serial,
		Detail: fmt.Sprintf("root sha256 %s, not after %s", fingerprintHex(st.active.Certificate), cert.NotAfter.UTC().Format(time.RFC3339)),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: record admin credential: %w", grpcx.ErrUnavailable, err)
	}
	r.log.InfoContext(ctx, "admin credential issued", "actor", actor, "spiffe_id", cr.ID.String(), "serial", serial,
		"not_after", cert.NotAfter)
	resp := &meshcav1.IssueAdminCredentialResponse{Certificate: cert.Raw, Serial: serial}
	for _, s := range st.statuses {
		if s.State.InBundle() {
			resp.Roots = append(resp.Roots, s.Cert.Raw)
		}
	}
	return resp, nil
}
