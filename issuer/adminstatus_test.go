package issuer_test

import (
	"testing"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// Status over the admin socket reports the store's revocations and audit
// head while the store answers, and "unreachable" (not an error, and no
// head) once it does not.
func TestAdminStatusStoreReachability(t *testing.T) {
	rig := newAdminRig(t)
	if _, err := rig.client.Revoke(t.Context(), &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}, Reason: "test",
	}); err != nil {
		t.Fatal(err)
	}
	head, err := rig.db.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s, err := rig.client.Status(t.Context(), &meshcav1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s.GetRole() != "issuer" || s.GetCluster() != "east" || s.GetTrustDomain() != "east.example" ||
		!s.GetStore().GetReachable() || s.GetRevocations() != 1 || s.GetAudit().GetHeadSeq() != head.Seq ||
		s.GetAudit().GetHeadSeq() == 0 || !s.GetTime().AsTime().Equal(adminT0) {
		t.Fatalf("status with the store up: %v (head seq %d)", s, head.Seq)
	}
	if err := rig.db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = rig.client.Status(t.Context(), &meshcav1.StatusRequest{})
	if err != nil {
		t.Fatalf("status with the store closed: %v, want an answer", err)
	}
	if s.GetStore().GetReachable() || s.GetAudit().GetHeadSeq() != 0 || s.GetRole() != "issuer" {
		t.Fatalf("status with the store closed: %v, want unreachable and no head", s)
	}
}
