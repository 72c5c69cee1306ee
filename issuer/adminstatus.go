package issuer

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
)

// Status implements meshcav1.AdminServiceServer: the issuer's trust domain,
// cluster and addresses, the roots of its bundle, the intermediates it
// holds, the sequence of the bundle it serves, and what its store holds
// (see adminapi.StoreStatus). A store that does not answer is reported in
// the response, not as an error.
func (s *AdminServer) Status(ctx context.Context, _ *meshcav1.StatusRequest) (*meshcav1.StatusResponse, error) {
	now := s.cfg.Now()
	resp := &meshcav1.StatusResponse{
		Role: adminapi.RoleIssuer, TrustDomain: s.cfg.TrustDomain.Name(), Cluster: s.cfg.Cluster, Upstream: s.cfg.Upstream,
		Listen: s.cfg.Listening.ToProto(), Time: timestamppb.New(now),
	}
	if iss := s.cfg.Issuer; iss != nil {
		resp.Roots, resp.Intermediates = iss.caStatus()
		var src BundleSource = issuerBundles{iss}
		if s.cfg.Bundles != nil {
			src = s.cfg.Bundles
		}
		if tb, _ := src.Current(); tb != nil {
			resp.BundleSequence = tb.Sequence
		}
	}
	adminapi.StoreStatus(ctx, s.cfg.Store, s.cfg.CheckpointDir, now, s.cfg.Logger, resp)
	return resp, nil
}

// caStatus describes the roots of the issuer's bundle (the one its
// intermediate chains to "active") and the intermediates it holds: the
// current one "active", the next one "prepared", and those it replaced
// that have not expired "previous".
func (iss *Issuer) caStatus() (roots, inters []*meshcav1.CACertificate) {
	sig := iss.current()
	now := iss.cfg.Now()
	for _, r := range sig.bundle.Roots() {
		state := ""
		if r.Equal(sig.root) {
			state = "active"
		}
		roots = append(roots, adminapi.CACertificate(r, state, ""))
	}
	inters = append(inters, adminapi.CACertificate(sig.authority.Certificate, "active", ""))
	if p := sig.prepared; p != nil && p != sig.authority {
		inters = append(inters, adminapi.CACertificate(p.Certificate, "prepared", ""))
	}
	for _, p := range sig.previous {
		if now.Before(p.Certificate.NotAfter) {
			inters = append(inters, adminapi.CACertificate(p.Certificate, "previous", ""))
		}
	}
	return roots, inters
}
