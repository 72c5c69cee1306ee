package root

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

type rootService struct {
	meshcav1.UnimplementedRootServiceServer
	r *Root
}

// Enroll implements meshcav1.RootServiceServer.
func (s *rootService) Enroll(ctx context.Context, req *meshcav1.EnrollRequest) (*meshcav1.EnrollResponse, error) {
	resp, err := s.r.enroll(ctx, req)
	if err != nil {
		err = statusOf(ctx, s.r.log, "Enroll", err)
	}
	s.r.service.enrolled(err)
	return resp, err
}

// Renew implements meshcav1.RootServiceServer.
func (s *rootService) Renew(ctx context.Context, req *meshcav1.RenewRequest) (*meshcav1.RenewResponse, error) {
	resp, err := s.r.renew(ctx, req)
	if err != nil {
		err = statusOf(ctx, s.r.log, "Renew", err)
	}
	s.r.service.renewed(err)
	return resp, err
}

// PublishCRLs implements meshcav1.RootServiceServer.
func (s *rootService) PublishCRLs(ctx context.Context, req *meshcav1.PublishCRLsRequest) (*meshcav1.PublishCRLsResponse, error) {
	resp, err := s.r.publishCRLs(ctx, req)
	if err != nil {
		return nil, statusOf(ctx, s.r.log, "PublishCRLs", err)
	}
	return resp, nil
}

// hashToken is how join tokens are named in the store: the lower-case hex
// SHA-256 of the whole token.
func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// enroll checks both CSRs and that a root can sign before it redeems the
// token, so that a malformed request or an outage does not burn it.
func (r *Root) enroll(ctx context.Context, req *meshcav1.EnrollRequest) (*meshcav1.EnrollResponse, error) {
	credCSR, err := parseCSR("credential CSR", req.GetCredentialCsr())
	if err != nil {
		return nil, err
	}
	interCSR, err := parseCSR("intermediate CSR", req.GetIntermediateCsr())
	if err != nil {
		return nil, err
	}
	st := r.state.Load()
	if st.active == nil {
		return nil, errNoActiveRoot
	}
	if req.GetJoinToken() == "" {
		return nil, fmt.Errorf("%w: no join token", grpcx.ErrUnauthenticated)
	}
	replica := req.GetReplica()
	now := r.cfg.Now()
	c, replicas, err := r.cfg.Store.RedeemJoinToken(ctx, hashToken(req.GetJoinToken()), now, store.AuditEvent{
		Time: now, Actor: "join-token", Action: "cluster.enroll",
		Detail: fmt.Sprintf("enrolment of replica %q from %s", replica, grpcx.PeerAddr(ctx)),
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: join token: %w", grpcx.ErrUnauthenticated, err)
	case err != nil:
		return nil, fmt.Errorf("%w: redeem join token: %w", grpcx.ErrUnavailable, err)
	}
	if r.state.Load().revoked[c.Name] {
		// The token is used up: a revoked cluster enrols again under a
		// new name, with a new token.
		return nil, revokedError(c.Name)
	}
	if replicas > 1 {
		// A token of several replicas stays valid: refusing here burns
		// nothing.
		if err := checkReplicaName(c, replica, replicas); err != nil {
			return nil, err
		}
	} else {
		// A one-time token enrols the cluster's single issuer, whatever
		// name it gives.
		replica = ""
	}
	id, err := credentialID(c, replica)
	if err != nil {
		return nil, err
	}
	out, err := r.enrollIssue(ctx, st, c, replica, replicas, id, interCSR, credCSR.PublicKey)
	if err != nil {
		if replicas > 1 {
			return nil, fmt.Errorf("cluster %s replica %s redeemed its join token, but enrolment failed: %w", c.Name, replica, err)
		}
		return nil, fmt.Errorf("cluster %s enrolled with a join token, which is now used: %w", c.Name, err)
	}
	r.log.InfoContext(ctx, "issuer enrolled", "cluster", c.Name, "replica", replica, "trust_domain", c.TrustDomain,
		"serial", trust.SerialHex(out.intermediate.SerialNumber), "not_after", out.intermediate.NotAfter,
		"credential_serial", trust.SerialHex(out.credential.SerialNumber), "peer", grpcx.PeerAddr(ctx))
	return &meshcav1.EnrollResponse{
		Cluster: c.Name, TrustDomain: c.TrustDomain,
		CredentialChain:   [][]byte{out.credential.Raw},
		IntermediateChain: out.intermediateChain(),
		Bundle:            out.bundle.ToProto(),
		Replicas:          int32(replicas), //nolint:gosec // at most store.MaxReplicas
	}, nil
}

// enrollIssue signs a credential and an intermediate for replica of
// cluster c, which has just redeemed a join token of replicas. The
// credential starts a new lineage: every earlier credential of that
// replica, and a revocation of its lineage after a reuse, is replaced.
func (r *Root) enrollIssue(ctx context.Context, st *state, c store.Cluster, replica string, replicas int, id spiffeid.ID, interCSR *x509.CertificateRequest, credPub crypto.PublicKey) (issued, error) {
	cred, err := r.startLineage(ctx, st, c, replica, replicas, credPub)
	if err != nil {
		return issued{}, err
	}
	out, err := r.issue(ctx, st, c, interCSR, id.String())
	out.credential = cred
	return out, err
}

// renew answers RootService.Renew: every renewal replaces the caller's
// credential (see the lineage rule in credential.go), so the credential CSR
// is required.
func (r *Root) renew(ctx context.Context, req *meshcav1.RenewRequest) (*meshcav1.RenewResponse, error) {
	st := r.state.Load()
	caller, err := r.authenticate(ctx, st, renewCredential)
	if err != nil {
		return nil, err
	}
	c := caller.cluster
	if st.revoked[c.Name] {
		return nil, revokedError(c.Name)
	}
	interCSR, err := parseCSR("intermediate CSR", req.GetIntermediateCsr())
	if err != nil {
		return nil, err
	}
	credCSR, err := parseCSR("credential CSR", req.GetCredentialCsr())
	if err != nil {
		return nil, fmt.Errorf("%w (every renewal replaces the issuer credential)", err)
	}
	cred, err := r.signCredential(st, c, caller.replica, credCSR.PublicKey)
	if err != nil {
		return nil, err
	}
	next := afterRenew(caller.record, lineageKey{c.Name, caller.replica}, caller.leaf, cred)
	err = r.cfg.Store.SwapClusterCredential(ctx, caller.record, next, r.credentialIssued(caller.id.String(), c, cred, st.active.Certificate))
	switch {
	case errors.Is(err, store.ErrConflict):
		r.log.WarnContext(ctx, "credential used concurrently: another renewal with the same credential was accepted first",
			"cluster", c.Name, "serial", caller.serial, "peer", grpcx.PeerAddr(ctx))
		return nil, fmt.Errorf("%w: concurrent renewal of cluster %s with credential serial %s lost: %w", grpcx.ErrUnavailable, c.Name, caller.serial, err)
	case err != nil:
		return nil, fmt.Errorf("%w: record credential: %w", grpcx.ErrUnavailable, err)
	}
	out, err := r.issue(ctx, st, c, interCSR, caller.id.String())
	if err != nil {
		return nil, err
	}
	r.log.InfoContext(ctx, "intermediate renewed", "cluster", c.Name, "replica", caller.replica, "serial", trust.SerialHex(out.intermediate.SerialNumber),
		"not_after", out.intermediate.NotAfter, "root_sha256", hex.EncodeToString(st.activeFP[:]),
		"credential_serial", trust.SerialHex(cred.SerialNumber), "replaced_credential_serial", caller.serial)
	return &meshcav1.RenewResponse{
		IntermediateChain: out.intermediateChain(), CredentialChain: [][]byte{cred.Raw}, Bundle: out.bundle.ToProto(),
	}, nil
}

// issuerCaller is an issuer authenticated by its credential.
type issuerCaller struct {
	cluster store.Cluster
	// replica is the replica of the cluster's issuer the credential names;
	// empty for its single issuer.
	replica string
	id      spiffeid.ID
	leaf    *x509.Certificate
	// serial is leaf's.
	serial string
	// record is the cluster's credential record the call was admitted on;
	// the zero value when the cluster has none.
	record store.ClusterCredential
}

// authenticate identifies a Renew caller by its TLS client certificate,
// which must be an issuer credential: a leaf whose only verified chain is
// [credential, root] with root one of the recorded, unexpired roots (a
// certificate under an intermediate is refused, since intermediates can
// mint URIs in their trust domain), naming
// spiffe://<td>/meshca/cluster/<name>[/<replica>] of a registered cluster of trust
// domain td, and admitted by admitCredential for call. The TLS layer has
// already checked the chain the client sent; this check ignores the
// client's intermediates.
func (r *Root) authenticate(ctx context.Context, st *state, call credentialCall) (issuerCaller, error) {
	fail := func(format string, args ...any) (issuerCaller, error) {
		return issuerCaller{}, fmt.Errorf("%w: "+format, append([]any{grpcx.ErrUnauthenticated}, args...)...)
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return fail("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return fail("no client certificate")
	}
	leaf := info.State.PeerCertificates[0]
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: st.clientCAs, CurrentTime: r.cfg.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fail("client certificate serial %s is not signed directly by a root: %w", trust.SerialHex(leaf.SerialNumber), err)
	}
	for _, chain := range chains {
		if len(chain) != 2 {
			return fail("client certificate serial %s: chain of length %d", trust.SerialHex(leaf.SerialNumber), len(chain))
		}
	}
	if leaf.IsCA || len(leaf.URIs) != 1 {
		return fail("client certificate serial %s is not an issuer credential", trust.SerialHex(leaf.SerialNumber))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return fail("client certificate URI: %w", err)
	}
	name, replica, ok := parseCredentialPath(id.Path())
	if !ok {
		return fail("client certificate ID %s is not an issuer credential", id)
	}
	c, err := r.cfg.Store.Cluster(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fail("credential %s: cluster %s is not registered", id, name)
	case err != nil:
		return issuerCaller{}, fmt.Errorf("%w: cluster %s: %w", grpcx.ErrUnavailable, name, err)
	case c.TrustDomain != id.TrustDomain().Name():
		return fail("credential %s: cluster %s has trust domain %s", id, name, c.TrustDomain)
	}
	rec, err := r.admitCredential(ctx, c, replica, id, leaf, call)
	if err != nil {
		return issuerCaller{}, err
	}
	return issuerCaller{cluster: c, replica: replica, id: id, leaf: leaf, serial: trust.SerialHex(leaf.SerialNumber), record: rec}, nil
}
