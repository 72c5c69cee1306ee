package root

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// TestWithSQLite runs enrolment, renewal, rotation and a restart against
// the embedded store.
func TestWithSQLite(t *testing.T) {
	h, db, open := newSQLiteHarness(t)
	clock := h.clock
	addr := h.serve()

	token := h.addCluster("east", "east.example")
	iss, err := enroll(t, h.dial(addr, nil), token)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if _, err := enroll(t, h.dial(addr, nil), token); err == nil {
		t.Fatalf("a join token was redeemed twice:\n%s", h.logs.String())
	}
	rootA := h.activeRoot()

	clock.Advance(time.Minute)
	if _, err := h.root.rotate(context.Background(), 0, "admin:test", false); err != nil {
		t.Fatal(err)
	}
	clock.Advance(h.cfg.PropagationDelay)
	h.refresh()
	wantStates(t, h, RootRetiring, RootActive)
	rootB := h.activeRoot()
	next, err := renew(t, h.dial(addr, iss.tlsCert()), iss, true)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if !signedBy(next.inter, rootB, clock.Now()) || !signedBy(next.cred, rootB, clock.Now()) {
		t.Fatal("renewal after activation is not under the new root")
	}
	ins, err := db.Intermediates(context.Background(), store.IntermediateFilter{RootFingerprint: fingerprintHex(rootA)})
	if err != nil || len(ins) != 1 || ins[0].Serial != trust.SerialHex(iss.inter.SerialNumber) {
		t.Fatalf("intermediates under the old root: %v, %+v", err, ins)
	}

	// A restart on a reopened database keeps the roots and their states.
	before, _ := h.root.Current()
	clock.Advance(time.Second)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	h.cfg.Store = open()
	h.root = h.start()
	wantStates(t, h, RootRetiring, RootActive)
	after, _ := h.root.Current()
	if !equalButCRLs(after, before) || after.Sequence <= before.Sequence {
		t.Fatalf("bundle across a restart: equal %v, sequence %d -> %d", equalButCRLs(after, before), before.Sequence, after.Sequence)
	}
	// The old root retires once the first intermediate has expired.
	clock.Advance(iss.inter.NotAfter.Sub(clock.Now()) + time.Second)
	h.refresh()
	wantStates(t, h, RootRetired, RootActive)
}

// TestRevocationWithSQLite revokes a cluster on the embedded store and
// restarts the root on it: the cluster stays revoked and the root CRL
// still lists its intermediates.
func TestRevocationWithSQLite(t *testing.T) {
	h, db, open := newSQLiteHarness(t)
	clock := h.clock
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	clock.Advance(time.Minute)
	east2, err := renew(t, h.dial(addr, east.tlsCert()), east, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{trust.SerialHex(east.inter.SerialNumber), trust.SerialHex(east2.inter.SerialNumber)}
	slices.Sort(want)
	bg := context.Background()
	if _, err := h.root.revoke(bg, &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}, Reason: "test",
	}, "admin:test"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	evs, err := db.AuditEvents(bg, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var revokes int
	for _, ev := range evs {
		if (ev.Action == "cluster.revoke" || ev.Action == "intermediate.revoke") && ev.Actor == "admin:test" && ev.Cluster == "east" {
			revokes++
		}
	}
	if revokes != 3 {
		t.Fatalf("%d revocation audit events by admin:test, want 3 (the cluster and two intermediates)", revokes)
	}

	clock.Advance(time.Second)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	h.cfg.Store = open()
	h.root = h.start()
	addr = h.serve()
	b, _ := h.root.Current()
	crls := rootCRLSerials(t, b, "east.example", clock.Now())
	if len(crls) != 1 {
		t.Fatalf("%d root CRLs after a restart, want 1", len(crls))
	}
	for _, serials := range crls {
		if !slices.Equal(serials, want) {
			t.Fatalf("root CRL after a restart lists %v, want %v", serials, want)
		}
	}
	wantBundleSigned(t, h, b)
	_, err = renew(t, h.dial(addr, east.tlsCert()), east, false)
	wantCode(t, err, codes.PermissionDenied)

	// The admin socket reads the store: revocations, the audit log and
	// its chain.
	client := h.adminClient()
	list, err := client.ListRevocations(bg, &meshcav1.ListRevocationsRequest{})
	if err != nil || len(list.GetRevocations()) != 3 || list.GetRevocations()[0].GetKind() != store.RevokeCluster {
		t.Fatalf("ListRevocations after a restart: %v, %+v", err, list.GetRevocations())
	}
	audit, err := client.ListAuditEvents(bg, &meshcav1.ListAuditEventsRequest{})
	if err != nil || !slices.ContainsFunc(audit.GetEvents(), func(ev *meshcav1.AuditEvent) bool {
		return ev.GetAction() == "cluster.revoke" && ev.GetActor() == "admin:test"
	}) {
		t.Fatalf("ListAuditEvents: %v, %d events without the revocation", err, len(audit.GetEvents()))
	}
	if v, err := client.VerifyAudit(bg, &meshcav1.VerifyAuditRequest{}); err != nil || !v.GetOk() {
		t.Fatalf("VerifyAudit: %v, %+v", err, v)
	}
	_, err = h.root.addCluster(bg, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example"}, "admin:test")
	if !errors.Is(err, grpcx.ErrFailedPrecondition) {
		t.Fatalf("AddCluster of a revoked name after a restart: %v", err)
	}
}

// newSQLiteHarness returns a harness whose root keeps its data in one
// SQLite file, that store, and a function that opens the file again (for
// a restart).
// The store and the root share the harness's clock.
func newSQLiteHarness(t *testing.T) (h *harness, db *sqlite.Store, open func() *sqlite.Store) {
	clock := newFakeClock()
	open = sqliteOpener(t, clock.Now)
	db = open()
	h = newHarness(t, func(c *Config) { c.Store = db; c.Now = clock.Now })
	h.clock = clock
	return h, db, open
}

// sqliteOpener returns a function that opens one SQLite file (again) with
// time from now; each store it opens is closed at the end of the test.
func sqliteOpener(t *testing.T, now func() time.Time) func() *sqlite.Store {
	path := filepath.Join(t.TempDir(), "root.db")
	return func() *sqlite.Store {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}
