package root

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"
)

func TestAdminService(t *testing.T) {
	h := newHarness(t, nil)
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "admin.sock")
	lis, err := adminapi.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Type() != os.ModeSocket || info.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, mode %v; want a socket with mode 0600", err, info.Mode())
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v, mode %v; want 0700", err, info.Mode().Perm())
	}
	defer testkit.Go(t, "ServeAdmin", func(ctx context.Context) error { return h.root.ServeAdmin(ctx, lis) })()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := meshcav1.NewAdminServiceClient(conn)
	bg := context.Background()

	resp, err := client.AddCluster(bg, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example"})
	if err != nil {
		t.Fatalf("AddCluster: %v", err)
	}
	rootA := h.activeRoot()
	if !strings.HasPrefix(resp.GetJoinToken(), JoinTokenPrefix) || len(resp.GetJoinToken()) < len(JoinTokenPrefix)+43 ||
		resp.GetExpiresAt().AsTime().Unix() != h.clock.Now().Add(defaultJoinTokenTTL).Unix() ||
		len(resp.GetRootSha256()) != 1 || resp.GetRootSha256()[0] != fingerprintHex(rootA) {
		t.Fatalf("AddCluster response: expires %v, roots %v", resp.GetExpiresAt().AsTime(), resp.GetRootSha256())
	}
	ev := h.events("cluster.add")
	if len(ev) != 1 || !strings.HasPrefix(ev[0].Actor, "admin:") || ev[0].Actor == "admin:unknown" {
		t.Fatalf("audit actor %+v, want the Unix user", ev)
	}
	if strings.Contains(ev[0].Detail, resp.GetJoinToken()) || strings.Contains(h.logs.String(), resp.GetJoinToken()) {
		t.Fatal("the join token reached the audit log or the log")
	}
	again, err := client.AddCluster(bg, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example", TokenTtlSeconds: 7 * 24 * 3600})
	if err != nil || again.GetJoinToken() == resp.GetJoinToken() {
		t.Fatalf("AddCluster for an existing cluster: %v; want a new token", err)
	}

	for _, tc := range []struct {
		name string
		req  *meshcav1.AddClusterRequest
		want codes.Code
	}{
		{"other trust domain", &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "west.example"}, codes.AlreadyExists},
		{"empty name", &meshcav1.AddClusterRequest{TrustDomain: "east.example"}, codes.InvalidArgument},
		{"upper case", &meshcav1.AddClusterRequest{Name: "East", TrustDomain: "east.example"}, codes.InvalidArgument},
		{"leading dash", &meshcav1.AddClusterRequest{Name: "-east", TrustDomain: "east.example"}, codes.InvalidArgument},
		{"slash", &meshcav1.AddClusterRequest{Name: "east/x", TrustDomain: "east.example"}, codes.InvalidArgument},
		{"too long", &meshcav1.AddClusterRequest{Name: strings.Repeat("a", 64), TrustDomain: "east.example"}, codes.InvalidArgument},
		{"bad trust domain", &meshcav1.AddClusterRequest{Name: "x", TrustDomain: "East Example"}, codes.InvalidArgument},
		{"no trust domain", &meshcav1.AddClusterRequest{Name: "x"}, codes.InvalidArgument},
		{"ttl too long", &meshcav1.AddClusterRequest{Name: "x", TrustDomain: "x.example", TokenTtlSeconds: 7*24*3600 + 1}, codes.InvalidArgument},
		{"negative ttl", &meshcav1.AddClusterRequest{Name: "x", TrustDomain: "x.example", TokenTtlSeconds: -1}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.AddCluster(bg, tc.req)
			wantCode(t, err, tc.want)
		})
	}
	if _, err := h.db.Cluster(bg, "x"); err == nil {
		t.Fatal("a refused AddCluster registered a cluster")
	}

	h.clock.Advance(time.Second)
	rot, err := client.RotateRoot(bg, &meshcav1.RotateRootRequest{PropagationDelaySeconds: 30})
	if err != nil {
		t.Fatalf("RotateRoot: %v", err)
	}
	if rot.GetRoot().GetState() != string(RootPrepared) || rot.GetRoot().GetActivateAt().AsTime().Unix() != h.clock.Now().Unix()+30 {
		t.Fatalf("RotateRoot: %+v", rot.GetRoot())
	}
	if ev := h.events("root.create"); len(ev) != 2 || ev[1].Actor != h.events("cluster.add")[0].Actor {
		t.Fatalf("root.create audit: %+v", ev)
	}
	_, err = client.RotateRoot(bg, &meshcav1.RotateRootRequest{PropagationDelaySeconds: -1})
	wantCode(t, err, codes.InvalidArgument)

	list, err := client.ListRoots(bg, &meshcav1.ListRootsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	roots := list.GetRoots()
	if len(roots) != 2 || roots[0].GetState() != "active" || roots[0].GetSha256() != fingerprintHex(rootA) ||
		roots[1].GetState() != "prepared" || roots[1].GetSha256() != rot.GetRoot().GetSha256() ||
		roots[0].GetKey() == "" || !roots[0].GetNotAfter().AsTime().Equal(rootA.NotAfter) {
		t.Fatalf("ListRoots: %+v", roots)
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &Config{})
}
