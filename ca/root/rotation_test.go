package root

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

// TestRootRotation follows a root rotation from the outside: the new root
// joins the bundle as prepared, signs after the propagation delay, and the
// old root stays in the bundle until the last intermediate under it expires.
func TestRootRotation(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := spiffeid.RequireTrustDomainFromString("east.example")
	iss := h.mustEnroll(addr, "east", "east.example")
	rootA := h.activeRoot()
	admin := &adminService{r: h.root}

	h.clock.Advance(time.Minute)
	rot, err := admin.RotateRoot(context.Background(), &meshcav1.RotateRootRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rot.GetRoot().GetState() != string(RootPrepared) ||
		rot.GetRoot().GetActivateAt().AsTime().Unix() != h.clock.Now().Add(h.cfg.PropagationDelay).Unix() {
		t.Fatalf("RotateRoot: %+v, want prepared, active after the propagation delay", rot.GetRoot())
	}
	rootB := h.root.Roots()[1].Cert
	if fingerprintHex(rootB) != rot.GetRoot().GetSha256() {
		t.Fatal("RotateRoot reported another root than the one recorded")
	}
	wantBundle(t, h, east, []*x509.Certificate{rootA, rootB}, rootA)
	wantStates(t, h, RootActive, RootPrepared)

	// Before the delay, intermediates still come from the old root.
	conn := h.dial(addr, iss.tlsCert())
	early, err := renew(t, conn, iss, false)
	if err != nil {
		t.Fatal(err)
	}
	if !signedBy(early.inter, rootA, h.clock.Now()) {
		t.Fatal("intermediate renewed before the delay is not under the old root")
	}

	// After the delay, the new root signs; the old one is retiring.
	h.clock.Advance(h.cfg.PropagationDelay)
	h.refresh()
	wantBundle(t, h, east, []*x509.Certificate{rootA, rootB}, rootB)
	wantStates(t, h, RootRetiring, RootActive)
	late, err := renew(t, conn, iss, true) // the credential under the old root is still accepted
	if err != nil {
		t.Fatalf("Renew with a credential under the retiring root: %v", err)
	}
	if !signedBy(late.inter, rootB, h.clock.Now()) || signedBy(late.inter, rootA, h.clock.Now()) ||
		!signedBy(late.cred, rootB, h.clock.Now()) {
		t.Fatal("intermediate or credential renewed after the delay is not under the new root")
	}
	if _, err := renew(t, h.dial(addr, late.tlsCert()), late, false); err != nil {
		t.Fatalf("Renew with the credential under the new root: %v", err)
	}
	// The serving certificate followed: a client that trusts only the new
	// root connects.
	onlyB := x509.NewCertPool()
	onlyB.AddCert(rootB)
	bconn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: onlyB, ServerName: "localhost", Time: h.clock.Now, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer bconn.Close()
	if _, err := meshcav1.NewBundleServiceClient(bconn).GetBundle(context.Background(), &meshcav1.GetBundleRequest{}); err != nil {
		t.Fatalf("GetBundle trusting only the new root: %v", err)
	}

	// The old root leaves the bundle once the last intermediate under it
	// (early) has expired, not before.
	h.clock.Advance(early.inter.NotAfter.Sub(h.clock.Now()) - time.Second)
	h.refresh()
	wantStates(t, h, RootRetiring, RootActive)
	h.clock.Advance(2 * time.Second)
	h.refresh()
	wantStates(t, h, RootRetired, RootActive)
	wantBundle(t, h, east, []*x509.Certificate{rootB}, rootB)
	list, err := admin.ListRoots(context.Background(), &meshcav1.ListRootsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetRoots()) != 1 || list.GetRoots()[0].GetSha256() != fingerprintHex(rootB) {
		t.Fatalf("ListRoots after retirement: %+v, want only the new root", list.GetRoots())
	}
}

func wantBundle(t testing.TB, h *harness, td spiffeid.TrustDomain, roots []*x509.Certificate, active *x509.Certificate) {
	t.Helper()
	b, _ := h.root.Current()
	d, ok := b.Domain(td)
	if !ok {
		t.Fatalf("bundle lacks %s", td)
	}
	got := d.Roots.Roots()
	if len(got) != len(roots) {
		t.Fatalf("bundle has %d roots, want %d", len(got), len(roots))
	}
	for i := range roots {
		if !got[i].Equal(roots[i]) {
			t.Fatalf("bundle root %d differs", i)
		}
	}
	if b.ActiveRoot != trust.Fingerprint(active) {
		t.Fatal("bundle names another active root")
	}
	wantSignedBy(t, b, active)
}

// wantSignedBy fails unless b carries a valid signature by signer.
func wantSignedBy(t testing.TB, b *trust.TrustBundle, signer *x509.Certificate) {
	t.Helper()
	only, err := trust.NewBundle(signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.VerifySignature(only, signer.NotBefore.Add(time.Minute)); err != nil {
		t.Fatalf("bundle %d is not signed by the expected root: %v", b.Sequence, err)
	}
}

func wantStates(t testing.TB, h *harness, want ...RootState) {
	t.Helper()
	got := states(h.root.Roots())
	if len(got) != len(want) {
		t.Fatalf("root states %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("root states %v, want %v", got, want)
		}
	}
}

func TestWatchBundle(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TrustDomains = []string{"east.example"} })
	addr := h.serve()
	iss := h.mustEnroll(addr, "east", "east.example")
	client := meshcav1.NewBundleServiceClient(h.dial(addr, iss.tlsCert()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch := func(known uint64) func() *trust.TrustBundle {
		stream, err := client.WatchBundle(ctx, &meshcav1.WatchBundleRequest{KnownSequence: known})
		if err != nil {
			t.Fatal(err)
		}
		return func() *trust.TrustBundle {
			t.Helper()
			msg, err := stream.Recv()
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			b, err := trust.TrustBundleFromProto(msg.GetBundle())
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	recv := watch(0)
	b1 := recv()
	if cur, _ := h.root.Current(); b1.Sequence != cur.Sequence || !b1.Equal(cur) {
		t.Fatal("the first message is not the current bundle")
	}
	rootA := h.activeRoot()
	wantSignedBy(t, b1, rootA)

	h.clock.Advance(time.Second)
	if _, err := h.root.rotate(context.Background(), 0, "admin:test", false); err != nil {
		t.Fatal(err)
	}
	b2 := recv()
	if b2.Sequence <= b1.Sequence || len(b2.Domains[0].Roots.Roots()) != 2 || b2.ActiveRoot != b1.ActiveRoot {
		t.Fatalf("after rotation: sequence %d (was %d), %d roots; want a newer bundle with both roots, same active",
			b2.Sequence, b1.Sequence, len(b2.Domains[0].Roots.Roots()))
	}
	// The bundle that introduces the new root is vouched for by the old.
	wantSignedBy(t, b2, rootA)

	h.clock.Advance(h.cfg.PropagationDelay)
	h.refresh()
	b3 := recv()
	if b3.Sequence <= b2.Sequence || b3.ActiveRoot == b2.ActiveRoot {
		t.Fatal("activation of the new root was not delivered as a newer bundle")
	}
	rootB := h.activeRoot()
	if rootB.Equal(rootA) {
		t.Fatal("the new root is not active")
	}
	wantSignedBy(t, b3, rootB)

	// A watcher that holds the current bundle gets only the next one.
	recv2 := watch(b3.Sequence)
	h.refresh() // nothing changed: nothing is sent
	h.addCluster("west", "west.example")
	b4, b4again := recv(), recv2()
	if b4.Sequence <= b3.Sequence || b4again.Sequence != b4.Sequence || len(b4.Domains) != 2 {
		t.Fatalf("after adding a trust domain: sequences %d and %d (was %d), %d domains",
			b4.Sequence, b4again.Sequence, b3.Sequence, len(b4.Domains))
	}
	wantSignedBy(t, b4, rootB)
	wantSignedBy(t, b4again, rootB)
	got, err := client.GetBundle(ctx, &meshcav1.GetBundleRequest{})
	if err != nil || got.GetBundle().GetSequence() != b4.Sequence {
		t.Fatalf("GetBundle: %v, sequence %d; want %d", err, got.GetBundle().GetSequence(), b4.Sequence)
	}
}
