package issuer_test

import (
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

const opsAdmin = "spiffe://east.example/ns/ops/sa/admin"

// TestIssuerAdminCredential: an issuer with a local root signs admin
// certificates with the root itself, records them for its cluster, and
// revokes them by serial onto the deny-list the admin API over mutual TLS
// asks; an issuer under the central root refuses, naming the root.
func TestIssuerAdminCredential(t *testing.T) {
	t.Run("upstream", func(t *testing.T) {
		rig := newAdminRig(t)
		_, err := rig.client.IssueAdminCredential(t.Context(), &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin, Csr: testkit.CSR(t)})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "root") {
			t.Fatalf("IssueAdminCredential without a local root: %v; want FailedPrecondition naming the root", err)
		}
	})
	t.Run("local root", func(t *testing.T) {
		tree := testkit.New(t, testkit.Options{TrustDomain: "east.example", Now: adminT0.Add(-time.Hour)})
		rig := newAdminRigWith(t, tree.Root)
		resp, err := rig.client.IssueAdminCredential(t.Context(), &meshcav1.IssueAdminCredentialRequest{SpiffeId: opsAdmin, Csr: testkit.CSR(t)})
		if err != nil {
			t.Fatalf("IssueAdminCredential: %v", err)
		}
		cert, err := x509.ParseCertificate(resp.GetCertificate())
		if err != nil {
			t.Fatal(err)
		}
		if cert.CheckSignatureFrom(tree.Root.Certificate) != nil || cert.IsCA || len(resp.GetRoots()) != 1 {
			t.Fatal("the admin certificate is not a leaf signed by the local root")
		}
		if evs := rig.events(t, "admin_credential.issue"); len(evs) != 1 || evs[0].Serial != resp.GetSerial() {
			t.Fatalf("audit events %+v", evs)
		}
		deny, err := issuer.NewDenyList(issuer.DenyListConfig{
			Store: rig.db, Cluster: "east", Now: func() time.Time { return adminT0 }, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		id := spiffeid.RequireFromString(opsAdmin)
		if err := deny.CheckRevoked(trust.SerialHex(cert.SerialNumber), id); err == nil {
			t.Fatal("a deny-list never loaded let an admin in")
		}
		if err := deny.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := deny.CheckRevoked(trust.SerialHex(cert.SerialNumber), id); err != nil {
			t.Fatalf("before the revocation: %v", err)
		}
		if _, err := rig.client.Revoke(t.Context(), &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: resp.GetSerial()}}); err != nil {
			t.Fatalf("revoke the admin certificate: %v", err)
		}
		if err := deny.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := deny.CheckRevoked(trust.SerialHex(cert.SerialNumber), id); err == nil {
			t.Fatal("a revoked admin certificate passed the deny-list")
		}
	})
}
