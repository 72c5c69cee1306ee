package root

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/store"
)

// StatusInfo is what the admin API's Status reports about the process a
// Root runs in, beyond the Root's own state. Zero fields are reported
// empty.
type StatusInfo struct {
	// TrustDomain names the mesh's SPIFFE bundle (served to federation
	// peers); empty when the root serves none.
	TrustDomain string
	// Listening are the process's addresses.
	Listening adminapi.Listening
	// CheckpointDir is where the audit checkpoints are signed; empty
	// means Status reports no checkpoint.
	CheckpointDir string
}

// Status implements meshcav1.AdminServiceServer: the roots in the bundle
// and its sequence, the own trust domains, the cluster intermediates
// valid now, the registered clusters, and what the store holds (see
// adminapi.StoreStatus). A store that does not answer is reported in the
// response, not as an error.
func (s *adminService) Status(ctx context.Context, _ *meshcav1.StatusRequest) (*meshcav1.StatusResponse, error) {
	r := s.r
	now := r.cfg.Now()
	info := r.cfg.Status
	resp := &meshcav1.StatusResponse{
		Role: adminapi.RoleRoot, TrustDomain: info.TrustDomain, Listen: info.Listening.ToProto(), Time: timestamppb.New(now),
	}
	for _, st := range r.Roots() {
		if st.State.InBundle() {
			resp.Roots = append(resp.Roots, adminapi.CACertificate(st.Cert, string(st.State), ""))
		}
	}
	if tb, _ := r.Current(); tb != nil {
		resp.BundleSequence = tb.Sequence
		for _, d := range tb.Domains {
			if !d.Federated {
				resp.TrustDomains = append(resp.TrustDomains, d.TrustDomain.Name())
			}
		}
	}
	adminapi.StoreStatus(ctx, statusStore{r.cfg.Store}, info.CheckpointDir, now, r.log, resp)
	if !resp.Store.Reachable {
		return resp, nil
	}
	inters, err := r.cfg.Store.Intermediates(ctx, store.IntermediateFilter{ActiveAt: now})
	if err == nil {
		resp.Intermediates = intermediateStatus(inters)
		resp.Clusters, err = r.clusterStatus(ctx, inters)
	}
	if err != nil {
		resp.Store.Reachable = false
		r.log.WarnContext(ctx, "status: store unreachable", "actor", adminapi.Actor(ctx), "error", err.Error())
	}
	return resp, nil
}

// statusStore is the root's Store as adminapi.StoreStatus reads it; a store
// without an audit head reader (both backends have one) reports an empty
// head.
type statusStore struct{ Store }

func (s statusStore) AuditHead(ctx context.Context) (store.ChainHead, error) {
	if h, ok := s.Store.(store.AuditHeadReader); ok {
		return h.AuditHead(ctx)
	}
	return store.ChainHead{}, nil
}

// intermediateStatus describes the intermediates, by cluster then
// NotAfter.
func intermediateStatus(inters []store.Intermediate) []*meshcav1.CACertificate {
	inters = slices.Clone(inters)
	slices.SortFunc(inters, func(a, b store.Intermediate) int {
		if c := strings.Compare(a.Cluster, b.Cluster); c != 0 {
			return c
		}
		return a.NotAfter.Compare(b.NotAfter)
	})
	out := make([]*meshcav1.CACertificate, 0, len(inters))
	for _, in := range inters {
		if c, err := x509.ParseCertificate(in.DER); err == nil {
			out = append(out, adminapi.CACertificate(c, "valid", in.Cluster))
			continue
		}
		out = append(out, &meshcav1.CACertificate{
			Sha256: in.Fingerprint, Serial: in.Serial, NotBefore: timestamppb.New(in.NotBefore),
			NotAfter: timestamppb.New(in.NotAfter), State: "valid", Cluster: in.Cluster,
		})
	}
	return out
}

// clusterStatus lists the registered clusters (those with a valid
// intermediate when the store cannot list them), with their intermediates
// among inters and whether they are revoked.
func (r *Root) clusterStatus(ctx context.Context, inters []store.Intermediate) ([]*meshcav1.ClusterStatus, error) {
	count := map[string]int32{}
	tds := map[string]string{}
	for _, in := range inters {
		count[in.Cluster]++
		tds[in.Cluster] = in.TrustDomain
	}
	var clusters []store.Cluster
	if lister, ok := r.cfg.Store.(ClusterLister); ok {
		var err error
		if clusters, err = lister.Clusters(ctx); err != nil {
			return nil, err
		}
	} else {
		for name, td := range tds {
			clusters = append(clusters, store.Cluster{Name: name, TrustDomain: td})
		}
	}
	slices.SortFunc(clusters, func(a, b store.Cluster) int { return strings.Compare(a.Name, b.Name) })
	revoked := r.state.Load().revoked
	out := make([]*meshcav1.ClusterStatus, 0, len(clusters))
	for _, c := range clusters {
		out = append(out, &meshcav1.ClusterStatus{
			Name: c.Name, TrustDomain: c.TrustDomain, Revoked: revoked[c.Name], Intermediates: count[c.Name], DnsNames: c.DNSNames,
		})
	}
	return out, nil
}
