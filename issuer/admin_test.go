package issuer_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

// fakeRefresher counts deny-list refreshes and fails them with err.
type fakeRefresher struct {
	mu    sync.Mutex
	calls int
	err   error
}

var (
	_ issuer.Refresher = (*fakeRefresher)(nil)
	_ issuer.Refresher = (*issuer.DenyList)(nil)
)

func (f *fakeRefresher) Refresh(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.err
}

func (f *fakeRefresher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeRefresher) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

var adminT0 = time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)

const (
	adminIDA = "spiffe://east.example/ns/a/sa/x"
	adminIDB = "spiffe://east.example/ns/b/sa/y"
)

// adminCerts are in the store of every adminRig.
var adminCerts = []store.Certificate{
	{Serial: "abc1", SPIFFEID: adminIDA, Cluster: "east", NotBefore: adminT0.Add(-time.Minute), NotAfter: adminT0.Add(time.Hour)},
	{Serial: "abc2", SPIFFEID: adminIDA, Cluster: "west", NotBefore: adminT0.Add(-time.Minute), NotAfter: adminT0.Add(time.Hour)},
	{Serial: "abc3", SPIFFEID: adminIDB, Cluster: "east", NotBefore: adminT0.Add(-2 * time.Hour), NotAfter: adminT0.Add(-time.Hour)},
}

type adminRig struct {
	db      *sqlite.Store
	refresh *fakeRefresher
	client  meshcav1.AdminServiceClient
}

// newAdminRig serves an issuer's AdminServer for cluster "east" of
// east.example on a real admin socket, over a SQLite store holding
// adminCerts.
func newAdminRig(t *testing.T) *adminRig { t.Helper(); return newAdminRigWith(t, nil) }

// newAdminRigWith is newAdminRig for an issuer whose local root is root
// (nil: an issuer under the central root).
func newAdminRigWith(t *testing.T, root *ca.Authority) *adminRig {
	t.Helper()
	now := func() time.Time { return adminT0 }
	db, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "meshca.db"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, c := range adminCerts {
		if err := db.RecordIssuance(t.Context(), c, store.AuditEvent{Actor: "system:test", Action: "certificate.issue"}); err != nil {
			t.Fatal(err)
		}
	}
	rig := &adminRig{db: db, refresh: &fakeRefresher{}}
	srv, err := issuer.NewAdminServer(issuer.AdminConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Cluster: "east",
		Store: db, DenyList: rig.refresh, Root: fixedOrNone(root), Now: now, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "run", "admin.sock")
	lis, err := adminapi.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "ServeUnix", func(ctx context.Context) error { return srv.ServeUnix(ctx, lis) })
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rig.client = meshcav1.NewAdminServiceClient(conn)
	return rig
}

func (r *adminRig) events(t *testing.T, action string) []store.AuditEvent {
	t.Helper()
	all, err := r.db.AuditEvents(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, ev := range all {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

func (r *adminRig) inForce(t *testing.T) []string {
	t.Helper()
	revs, err := r.db.Revocations(t.Context(), adminT0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rev := range revs {
		out = append(out, rev.Kind+":"+rev.Value)
	}
	return out
}

func wantStatus(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if s, _ := status.FromError(err); s.Code() != code || !strings.Contains(s.Message(), msgPart) {
		t.Fatalf("error %v, want %v mentioning %q", err, code, msgPart)
	}
}

func TestAdminRevokeSerialAndSPIFFEID(t *testing.T) {
	rig := newAdminRig(t)
	ctx := t.Context()

	resp, err := rig.client.Revoke(ctx, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: "ABC1"}, Reason: " key leaked "})
	if err != nil {
		t.Fatalf("Revoke serial: %v", err)
	}
	rev := resp.GetRevocation()
	actor := rev.GetRevokedBy()
	if !strings.HasPrefix(actor, "admin:") || actor == "admin:unknown" {
		t.Fatalf("revoked by %q, want the socket peer's Unix user", actor)
	}
	if rev.GetKind() != store.RevokeSerial || rev.GetValue() != "abc1" || rev.GetCluster() != "east" ||
		rev.GetReason() != "key leaked" || !rev.GetRevokedAt().AsTime().Equal(adminT0) ||
		!rev.GetExpiresAt().AsTime().Equal(adminCerts[0].NotAfter) {
		t.Fatalf("revocation %v", rev)
	}
	if rig.refresh.count() != 1 {
		t.Fatalf("deny-list refreshed %d times after a revocation, want 1", rig.refresh.count())
	}
	ev := rig.events(t, "revocation.add")
	if len(ev) != 1 || ev[0].Actor != actor || ev[0].Cluster != "east" || ev[0].Serial != "abc1" ||
		ev[0].SPIFFEID != adminIDA || ev[0].Detail != "key leaked" {
		t.Fatalf("audit events %+v", ev)
	}

	resp, err = rig.client.Revoke(ctx, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDB}})
	if err != nil {
		t.Fatalf("Revoke SPIFFE ID: %v", err)
	}
	if rev := resp.GetRevocation(); rev.GetKind() != store.RevokeSPIFFEID || rev.GetValue() != adminIDB ||
		rev.GetCluster() != "east" || rev.GetExpiresAt() != nil || rev.GetRevokedBy() != actor {
		t.Fatalf("revocation %v", rev)
	}
	if ev := rig.events(t, "revocation.add"); len(ev) != 2 || ev[1].SPIFFEID != adminIDB || ev[1].Serial != "" || ev[1].Actor != actor {
		t.Fatalf("audit events %+v", ev)
	}
	if got, want := strings.Join(rig.inForce(t), " "), "serial:abc1 spiffe_id:"+adminIDB; got != want {
		t.Fatalf("in force %q, want %q", got, want)
	}
	if rig.refresh.count() != 2 {
		t.Fatalf("deny-list refreshed %d times, want 2", rig.refresh.count())
	}

	// The read calls see them.
	list, err := rig.client.ListRevocations(ctx, &meshcav1.ListRevocationsRequest{})
	if err != nil || len(list.GetRevocations()) != 2 {
		t.Fatalf("ListRevocations = %v, %v", list, err)
	}
	got, err := rig.client.GetCertificate(ctx, &meshcav1.GetCertificateRequest{Serial: "abc1"})
	if err != nil || got.GetRevoked().GetKind() != store.RevokeSerial || got.GetCertificate().GetSpiffeId() != adminIDA {
		t.Fatalf("GetCertificate = %v, %v", got, err)
	}
	audit, err := rig.client.ListAuditEvents(ctx, &meshcav1.ListAuditEventsRequest{})
	// Three issuances, then two revocations, all within the last hour.
	if ev := audit.GetEvents(); err != nil || len(ev) != 5 || ev[4].GetActor() != actor || ev[4].GetAction() != "revocation.add" {
		t.Fatalf("ListAuditEvents = %v, %v", audit, err)
	}
	if v, err := rig.client.VerifyAudit(ctx, &meshcav1.VerifyAuditRequest{}); err != nil || !v.GetOk() {
		t.Fatalf("VerifyAudit = %v, %v", v, err)
	}
}

func TestAdminRevokeRefusals(t *testing.T) {
	rig := newAdminRig(t)
	long := strings.Repeat("x", issuer.MaxRevokeReason+1)
	for _, tc := range []struct {
		name    string
		req     *meshcav1.RevokeRequest
		code    codes.Code
		msgPart string
	}{
		{"unknown serial", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: "ffff"}}, codes.NotFound, "ffff"},
		{"bad serial", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: "xyz"}}, codes.InvalidArgument, "xyz"},
		{"empty serial", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{}}, codes.InvalidArgument, "serial"},
		{"another cluster's serial", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: "abc2"}}, codes.FailedPrecondition, "west"},
		{"expired serial", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: "abc3"}}, codes.FailedPrecondition, "expired"},
		{"bad SPIFFE ID", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: "east.example/ns/a"}}, codes.InvalidArgument, "SPIFFE ID"},
		{"other trust domain", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: "spiffe://west.example/ns/a/sa/x"}}, codes.InvalidArgument, "trust domain"},
		{"trust domain ID", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: "spiffe://east.example"}}, codes.InvalidArgument, "not a workload"},
		{"cluster", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}}, codes.FailedPrecondition, "cluster revocation is done on the root's admin socket"},
		{"no target", &meshcav1.RevokeRequest{Reason: "why"}, codes.InvalidArgument, "serial or a SPIFFE ID"},
		{"long reason", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}, Reason: long}, codes.InvalidArgument, "reason"},
		{"multi-line reason", &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}, Reason: "a\nfake: line"}, codes.InvalidArgument, "reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rig.client.Revoke(t.Context(), tc.req)
			wantStatus(t, err, tc.code, tc.msgPart)
		})
	}
	if got := rig.inForce(t); len(got) != 0 || len(rig.events(t, "revocation.add")) != 0 || rig.refresh.count() != 0 {
		t.Fatalf("refused revocations left %v in force, %d refreshes", got, rig.refresh.count())
	}

	// Already in force: AlreadyExists, nothing more written.
	req := &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}}
	if _, err := rig.client.Revoke(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	_, err := rig.client.Revoke(t.Context(), req)
	wantStatus(t, err, codes.AlreadyExists, adminIDA)
	if n := len(rig.events(t, "revocation.add")); n != 1 || rig.refresh.count() != 1 {
		t.Fatalf("%d audit events, %d refreshes after a duplicate, want 1 and 1", n, rig.refresh.count())
	}

	for name, call := range map[string]func() error{
		"AddCluster": func() error {
			_, err := rig.client.AddCluster(t.Context(), &meshcav1.AddClusterRequest{Name: "x", TrustDomain: "x.example"})
			return err
		},
		"RotateRoot": func() error {
			_, err := rig.client.RotateRoot(t.Context(), &meshcav1.RotateRootRequest{})
			return err
		},
		"ListRoots": func() error {
			_, err := rig.client.ListRoots(t.Context(), &meshcav1.ListRootsRequest{})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) { wantStatus(t, call(), codes.FailedPrecondition, "root's admin socket") })
	}
}

func TestAdminUnrevoke(t *testing.T) {
	rig := newAdminRig(t)
	ctx := t.Context()
	if _, err := rig.client.Revoke(ctx, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rig.client.Unrevoke(ctx, &meshcav1.UnrevokeRequest{SpiffeId: adminIDA}); err != nil {
		t.Fatalf("Unrevoke: %v", err)
	}
	// Only new issuance is allowed again: the unexpired certificate of the
	// identity in this cluster stays revoked, by serial.
	if got, want := rig.inForce(t), []string{"serial:abc1"}; !slices.Equal(got, want) {
		t.Fatalf("in force after Unrevoke: %v, want %v", got, want)
	}
	ev := rig.events(t, "revocation.lift")
	if len(ev) != 1 || ev[0].SPIFFEID != adminIDA || ev[0].Cluster != "east" || !strings.HasPrefix(ev[0].Actor, "admin:") ||
		ev[0].Actor != rig.events(t, "revocation.add")[0].Actor {
		t.Fatalf("audit events %+v", ev)
	}
	if rig.refresh.count() != 2 {
		t.Fatalf("deny-list refreshed %d times, want 2 (revoke, unrevoke)", rig.refresh.count())
	}

	for _, tc := range []struct {
		name    string
		id      string
		code    codes.Code
		msgPart string
	}{
		{"none in force", adminIDA, codes.NotFound, "no revocation"},
		{"never revoked", adminIDB, codes.NotFound, "no revocation"},
		{"empty", "", codes.InvalidArgument, "SPIFFE ID"},
		{"other trust domain", "spiffe://west.example/ns/a/sa/x", codes.InvalidArgument, "trust domain"},
		{"malformed", "spiffe://East Example/x", codes.InvalidArgument, "SPIFFE ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rig.client.Unrevoke(ctx, &meshcav1.UnrevokeRequest{SpiffeId: tc.id})
			wantStatus(t, err, tc.code, tc.msgPart)
		})
	}
	if n := len(rig.events(t, "revocation.lift")); n != 1 || rig.refresh.count() != 2 {
		t.Fatalf("refused unrevocations wrote %d events, %d refreshes", n, rig.refresh.count())
	}

	// Revoked again once lifted.
	if _, err := rig.client.Revoke(ctx, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}}); err != nil {
		t.Fatalf("revoke again after Unrevoke: %v", err)
	}
}

// A failed deny-list refresh does not undo or fail the change: it is
// recorded, and the next poll applies it.
func TestAdminRevokeStandsWhenRefreshFails(t *testing.T) {
	rig := newAdminRig(t)
	rig.refresh.fail(errors.New("store unreachable"))
	if _, err := rig.client.Revoke(t.Context(), &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}}); err != nil {
		t.Fatalf("Revoke with a failing refresh: %v", err)
	}
	if got := rig.inForce(t); len(got) != 1 || rig.refresh.count() != 1 {
		t.Fatalf("in force %v after %d refreshes", got, rig.refresh.count())
	}
}

func TestAdminStoreDown(t *testing.T) {
	rig := newAdminRig(t)
	if err := rig.db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := rig.client.Revoke(t.Context(), &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: adminIDA}})
	wantStatus(t, err, codes.Unavailable, "retry later")
	_, err = rig.client.Revoke(t.Context(), &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: "abc1"}})
	wantStatus(t, err, codes.Unavailable, "retry later")
	_, err = rig.client.Unrevoke(t.Context(), &meshcav1.UnrevokeRequest{SpiffeId: adminIDA})
	wantStatus(t, err, codes.Unavailable, "retry later")
	if rig.refresh.count() != 0 {
		t.Fatal("refreshed after a change that failed")
	}
}

func TestAdminConfigValidate(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("east.example")
	db := &sqlite.Store{}
	for name, cfg := range map[string]issuer.AdminConfig{
		"no trust domain": {Cluster: "east", Store: db, DenyList: &fakeRefresher{}},
		"no cluster":      {TrustDomain: td, Store: db, DenyList: &fakeRefresher{}},
		"no store":        {TrustDomain: td, Cluster: "east", DenyList: &fakeRefresher{}},
		"no deny-list":    {TrustDomain: td, Cluster: "east", Store: db},
	} {
		if _, err := issuer.NewAdminServer(cfg); err == nil {
			t.Errorf("%s: NewAdminServer accepted it", name)
		}
	}
}

// fixedOrNone is root as a CASource, nil for no root.
func fixedOrNone(root *ca.Authority) issuer.CASource {
	if root == nil {
		return nil
	}
	return issuer.FixedCA(root)
}
