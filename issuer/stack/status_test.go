package stack_test

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/trust"
)

// A running stack on PostgreSQL answers Status on its admin socket with
// its own cluster, addresses, the root of bundle.pem and the store's audit
// head.
func TestStatusOverAdminSocket(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, cfg := runStack(t, func(ctx context.Context) (stack.Store, error) { return postgres.Open(ctx, postgres.Config{DSN: dsn}) }, nil)
	socket := filepath.Join(cfg.DataDir, "admin.sock")
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := meshcav1.NewAdminServiceClient(conn).Status(t.Context(), &meshcav1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	head, err := db.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.GetRole() != "issuer" || s.GetCluster() != "dev" || s.GetTrustDomain() != "cluster.local" ||
		s.GetListen().GetGrpcAddr() != cfg.Listen || s.GetListen().GetAdminSocket() != socket {
		t.Errorf("status %v", s)
	}
	if !s.GetStore().GetReachable() || s.GetAudit().GetHeadSeq() != head.Seq || s.GetAudit().GetHeadHash() != hex.EncodeToString(head.Hash) {
		t.Errorf("store %v, audit %v; want reachable at head %d", s.GetStore(), s.GetAudit(), head.Seq)
	}
	data, err := os.ReadFile(filepath.Join(cfg.DataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := trust.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.GetRoots()) != 1 || s.GetRoots()[0].GetSha256() != fingerprintHex(roots.Roots()[0].Raw) {
		t.Errorf("roots %v, want bundle.pem's", s.GetRoots())
	}
	if len(s.GetIntermediates()) == 0 || s.GetIntermediates()[0].GetState() != "active" ||
		!strings.Contains(s.GetIntermediates()[0].GetSubject(), "CN=meshca intermediate CA dev") {
		t.Errorf("intermediates %v, want the active one of cluster dev first", s.GetIntermediates())
	}
}

func fingerprintHex(der []byte) string {
	f := trust.Fingerprint(&x509.Certificate{Raw: der})
	return hex.EncodeToString(f[:])
}
