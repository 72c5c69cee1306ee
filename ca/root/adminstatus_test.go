package root

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"
)

// Status over a real admin socket lists the roots in the bundle, each
// cluster with its valid intermediates (the one enrolment signed) and
// whether it is revoked, and the revocations in force.
func TestAdminStatus(t *testing.T) {
	h := newHarness(t, nil)
	east := h.mustEnroll(h.serve(), "east", "east.example")
	h.addCluster("west", "west.example")
	if _, err := h.root.revoke(context.Background(), &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_Cluster{Cluster: "west"}, Reason: "test",
	}, "admin:test"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := adminapi.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Go(t, "ServeAdmin", func(ctx context.Context) error { return h.root.ServeAdmin(ctx, lis) })
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := meshcav1.NewAdminServiceClient(conn).Status(context.Background(), &meshcav1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s.GetRole() != "root" || !s.GetStore().GetReachable() || s.GetRevocations() != 1 || s.GetAudit().GetHeadSeq() < 3 {
		t.Errorf("role %q, store %v, revocations %d, audit %v", s.GetRole(), s.GetStore(), s.GetRevocations(), s.GetAudit())
	}
	active := h.activeRoot()
	if len(s.GetRoots()) != 1 || s.GetRoots()[0].GetSha256() != fingerprintHex(active) || s.GetRoots()[0].GetState() != "active" ||
		!s.GetRoots()[0].GetNotAfter().AsTime().Equal(active.NotAfter) {
		t.Errorf("roots %v, want the active root", s.GetRoots())
	}
	tb, _ := h.root.Current()
	if s.GetBundleSequence() != tb.Sequence {
		t.Errorf("bundle sequence %d, want %d", s.GetBundleSequence(), tb.Sequence)
	}
	inters := s.GetIntermediates()
	if len(inters) != 1 || inters[0].GetSha256() != fingerprintHex(east.inter) || inters[0].GetCluster() != "east" ||
		inters[0].GetState() != "valid" || !inters[0].GetNotAfter().AsTime().Equal(east.inter.NotAfter) {
		t.Errorf("intermediates %v, want east's", inters)
	}
	cs := s.GetClusters()
	if len(cs) != 2 || cs[0].GetName() != "east" || cs[0].GetIntermediates() != 1 || cs[0].GetRevoked() ||
		cs[1].GetName() != "west" || cs[1].GetTrustDomain() != "west.example" || !cs[1].GetRevoked() {
		t.Errorf("clusters %v, want east with one intermediate and west revoked", cs)
	}
}
