package root

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// adminClient serves AdminService on a Unix socket until the test ends and
// returns a client whose calls carry this process's Unix user as actor.
func (h *harness) adminClient() meshcav1.AdminServiceClient {
	h.t.Helper()
	return adminClient(h.t, h.root)
}

// rootCRLSerials verifies the root CRLs of domain td in b against the
// in-bundle roots and returns the serials each lists (hex, sorted), by
// signing root.
func rootCRLSerials(t testing.TB, b *trust.TrustBundle, td string, now time.Time) map[*x509.Certificate][]string {
	t.Helper()
	d, ok := b.Domain(spiffeid.RequireTrustDomainFromString(td))
	if !ok {
		t.Fatalf("bundle %d has no domain %s", b.Sequence, td)
	}
	out := map[*x509.Certificate][]string{}
	for _, crl := range d.CRLs {
		if len(crl.IssuerChain) != 0 {
			continue
		}
		rl, issuer, err := trust.VerifyCRL(crl, d.Roots, now)
		if err != nil {
			t.Fatalf("root CRL in %s: %v", td, err)
		}
		out[issuer] = revokedSerials(rl)
	}
	return out
}

func revokedSerials(rl *x509.RevocationList) []string {
	var s []string
	for _, e := range rl.RevokedCertificateEntries {
		s = append(s, trust.SerialHex(e.SerialNumber))
	}
	slices.Sort(s)
	return s
}

// wantBundleSigned checks that b is signed by the active root, at now.
func wantBundleSigned(t testing.TB, h *harness, b *trust.TrustBundle) {
	t.Helper()
	roots, err := trust.NewBundle(h.activeRoot())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.VerifySignature(roots, h.clock.Now()); err != nil {
		t.Fatalf("bundle %d: %v", b.Sequence, err)
	}
}

func TestRevokeCluster(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	client := h.adminClient()
	bg := context.Background()

	east := h.mustEnroll(addr, "east", "east.example")
	west := h.mustEnroll(addr, "west", "west.example")
	// Three intermediates of east: the first expires before the
	// revocation and is left out.
	h.clock.Advance(time.Hour)
	east2, err := renew(t, h.dial(addr, east.tlsCert()), east, false)
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Hour + time.Second)
	east3, err := renew(t, h.dial(addr, east.tlsCert()), east, false)
	if err != nil {
		t.Fatal(err)
	}
	spareToken := h.addCluster("east", "east.example")
	before, _ := h.root.Current()
	if d, _ := before.Domain(spiffeid.RequireTrustDomainFromString("east.example")); len(d.CRLs) != 1 {
		t.Fatalf("%d CRLs before any revocation, want the root's (empty) one", len(d.CRLs))
	} else if rl, _, err := trust.VerifyCRL(d.CRLs[0], d.Roots, h.clock.Now()); err != nil || len(rl.RevokedCertificateEntries) != 0 {
		t.Fatalf("the root's CRL before any revocation: %v; want an empty, valid CRL", err)
	}

	resp, err := client.Revoke(bg, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}, Reason: "key leaked"})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	actor := resp.GetRevocation().GetRevokedBy()
	if resp.GetRevocation().GetKind() != store.RevokeCluster || resp.GetRevocation().GetValue() != "east" ||
		!strings.HasPrefix(actor, "admin:") || actor == "admin:unknown" || resp.GetRevocation().GetExpiresAt() != nil {
		t.Fatalf("Revoke response: %+v", resp.GetRevocation())
	}

	// The deny-list: the cluster and its two unexpired intermediates.
	want := []string{trust.SerialHex(east2.inter.SerialNumber), trust.SerialHex(east3.inter.SerialNumber)}
	slices.Sort(want)
	list, err := client.ListRevocations(bg, &meshcav1.ListRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, e := range list.GetRevocations() {
		switch e.GetKind() {
		case store.RevokeIntermediate:
			listed = append(listed, e.GetValue())
			if e.GetCluster() != "east" || e.GetRevokedBy() != actor || e.GetReason() != "key leaked" ||
				(!e.GetExpiresAt().AsTime().Equal(east2.inter.NotAfter) && !e.GetExpiresAt().AsTime().Equal(east3.inter.NotAfter)) {
				t.Errorf("intermediate revocation %+v", e)
			}
		case store.RevokeCluster:
			if e.GetValue() != "east" {
				t.Errorf("cluster revocation %+v", e)
			}
		}
	}
	slices.Sort(listed)
	if len(list.GetRevocations()) != 3 || !slices.Equal(listed, want) {
		t.Fatalf("ListRevocations: %+v; want the cluster and intermediates %v", list.GetRevocations(), want)
	}

	// Audit events, with the admin as actor.
	if evs := h.events("cluster.revoke"); len(evs) != 1 || evs[0].Actor != actor || evs[0].Cluster != "east" ||
		!strings.Contains(evs[0].Detail, "key leaked") {
		t.Fatalf("cluster.revoke audit: %+v", evs)
	}
	evs, err := client.ListAuditEvents(bg, &meshcav1.ListAuditEventsRequest{})
	if err != nil {
		t.Fatalf("ListAuditEvents: %v", err)
	}
	if last := evs.GetEvents()[len(evs.GetEvents())-1]; last.GetAction() != "intermediate.revoke" || last.GetActor() != actor {
		t.Fatalf("last audit event listed: %+v", last)
	}
	var audited []string
	for _, ev := range h.events("intermediate.revoke") {
		if ev.Actor != actor || ev.Cluster != "east" {
			t.Errorf("intermediate.revoke audit: %+v", ev)
		}
		audited = append(audited, ev.Serial)
	}
	slices.Sort(audited)
	if !slices.Equal(audited, want) {
		t.Fatalf("intermediate.revoke audit serials %v, want %v", audited, want)
	}

	// The root CRL lists them, in every own domain, under a new signed bundle.
	after, _ := h.root.Current()
	if after.Sequence <= before.Sequence {
		t.Fatalf("bundle sequence %d -> %d after a revocation", before.Sequence, after.Sequence)
	}
	wantBundleSigned(t, h, after)
	for _, td := range []string{"east.example", "west.example"} {
		got := rootCRLSerials(t, after, td, h.clock.Now())
		if len(got) != 1 {
			t.Fatalf("%s: %d root CRLs, want 1", td, len(got))
		}
		for issuer, serials := range got {
			if !issuer.Equal(h.activeRoot()) || !slices.Equal(serials, want) {
				t.Fatalf("%s: root CRL by %s lists %v, want %v by the active root", td, issuer.Subject, serials, want)
			}
		}
	}

	// The revoked cluster's issuer is refused; the other is not.
	_, err = renew(t, h.dial(addr, east.tlsCert()), east, true)
	wantCode(t, err, codes.PermissionDenied)
	if !strings.Contains(status.Convert(err).Message(), "cluster east is revoked") {
		t.Fatalf("Renew refusal %q does not say why", status.Convert(err).Message())
	}
	_, err = enroll(t, h.dial(addr, nil), spareToken)
	wantCode(t, err, codes.PermissionDenied)
	_, err = h.rootClient(addr, east).PublishCRLs(bg, &meshcav1.PublishCRLsRequest{})
	wantCode(t, err, codes.PermissionDenied)
	if _, err := renew(t, h.dial(addr, west.tlsCert()), west, false); err != nil {
		t.Fatalf("Renew of another cluster: %v", err)
	}
	if !strings.Contains(h.logs.String(), "cluster east is revoked") {
		t.Fatal("the refusals were not logged with their reason")
	}
	// The name cannot be registered again.
	_, err = client.AddCluster(bg, &meshcav1.AddClusterRequest{Name: "east", TrustDomain: "east.example"})
	wantCode(t, err, codes.FailedPrecondition)

	// Again: AlreadyExists, nothing new.
	n := h.auditCount()
	_, err = client.Revoke(bg, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}})
	wantCode(t, err, codes.AlreadyExists)
	if h.auditCount() != n {
		t.Fatal("a repeated revocation wrote audit events")
	}
}

func TestRevokeRefusals(t *testing.T) {
	// The Store contract alone: without AuditVerifier, VerifyAudit is refused.
	h := newHarness(t, func(c *Config) { c.Store = storeOnly{c.Store} })
	client := h.adminClient()
	h.addCluster("east", "east.example")
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
		msg  string
	}{
		{"unknown cluster", func() error {
			_, err := client.Revoke(context.Background(), &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "nope"}})
			return err
		}, codes.NotFound, "cluster nope is not registered"},
		{"bad cluster name", func() error {
			_, err := client.Revoke(context.Background(), &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "No/pe"}})
			return err
		}, codes.InvalidArgument, "not valid"},
		{"no target", func() error {
			_, err := client.Revoke(context.Background(), &meshcav1.RevokeRequest{Reason: "x"})
			return err
		}, codes.InvalidArgument, "nothing to revoke"},
		{"long reason", func() error {
			_, err := client.Revoke(context.Background(), &meshcav1.RevokeRequest{
				Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}, Reason: strings.Repeat("x", maxReasonBytes+1)})
			return err
		}, codes.InvalidArgument, "reason"},
		{"malformed serial", func() error {
			_, err := client.Revoke(context.Background(), &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{Serial: "1g"}})
			return err
		}, codes.InvalidArgument, "not a hexadecimal number"},
		{"spiffe id", func() error {
			_, err := client.Revoke(context.Background(), &meshcav1.RevokeRequest{
				Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: "spiffe://east.example/ns/a/sa/b"}})
			return err
		}, codes.FailedPrecondition, "revoke SPIFFE IDs on the issuer's admin socket"},
		{"list certificates", func() error {
			_, err := client.ListCertificates(context.Background(), &meshcav1.ListCertificatesRequest{})
			return err
		}, codes.FailedPrecondition, "use an issuer's admin socket"},
		{"get certificate", func() error {
			_, err := client.GetCertificate(context.Background(), &meshcav1.GetCertificateRequest{Serial: "1a"})
			return err
		}, codes.FailedPrecondition, "use an issuer's admin socket"},
		{"verify audit without a verifying store", func() error {
			_, err := client.VerifyAudit(context.Background(), &meshcav1.VerifyAuditRequest{})
			return err
		}, codes.Unimplemented, "cannot verify"},
		{"unrevoke", func() error {
			_, err := client.Unrevoke(context.Background(), &meshcav1.UnrevokeRequest{SpiffeId: "spiffe://east.example/ns/a/sa/b"})
			return err
		}, codes.FailedPrecondition, "issuer's admin socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			wantCode(t, err, tc.want)
			if !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("message %q, want it to contain %q", status.Convert(err).Message(), tc.msg)
			}
		})
	}
	if evs := h.events("cluster.revoke"); len(evs) != 0 {
		t.Fatalf("refused calls revoked: %+v", evs)
	}
	if rs, _ := h.db.Revocations(context.Background(), h.clock.Now()); len(rs) != 0 {
		t.Fatalf("refused calls recorded revocations: %+v", rs)
	}
}

// TestRevocationLoadedOnRefresh: a revocation recorded in the store without
// this process (another root process, or a Revoke that failed half-way)
// refuses the cluster's credential at once (the root reads the deny-list on
// every credential-authenticated call) and takes effect in full at the next
// re-evaluation, which also revokes the missing intermediates.
func TestRevocationLoadedOnRefresh(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	east := h.mustEnroll(addr, "east", "east.example")
	if _, err := renew(t, h.dial(addr, east.tlsCert()), east, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.Revoke(context.Background(), store.Revocation{
		Kind: store.RevokeCluster, Value: "east", Cluster: "east", RevokedBy: "admin:elsewhere",
	}, store.AuditEvent{Time: h.clock.Now(), Actor: "admin:elsewhere", Action: "cluster.revoke"}); err != nil {
		t.Fatal(err)
	}
	_, err := renew(t, h.dial(addr, east.tlsCert()), east, false)
	wantCode(t, err, codes.PermissionDenied)
	h.clock.Advance(time.Second)
	h.refresh()
	_, err = renew(t, h.dial(addr, east.tlsCert()), east, false)
	wantCode(t, err, codes.PermissionDenied)

	// Both intermediates (the enrolment's and the one that raced) are
	// revoked by the root itself and on its CRL.
	var want []string
	for _, in := range h.allIntermediates() {
		want = append(want, in.Serial)
	}
	slices.Sort(want)
	evs := h.events("intermediate.revoke")
	if len(evs) != 2 || evs[0].Actor != actorRoot || evs[1].Actor != actorRoot {
		t.Fatalf("intermediate.revoke audit: %+v", evs)
	}
	b, _ := h.root.Current()
	for _, serials := range rootCRLSerials(t, b, "east.example", h.clock.Now()) {
		if !slices.Equal(serials, want) {
			t.Fatalf("root CRL lists %v, want %v", serials, want)
		}
	}
	wantBundleSigned(t, h, b)
}

// TestRootCRLLifecycle: the root CRL is re-signed at half-life and when a
// root joins the bundle, and goes when the revoked intermediates expire.
func TestRootCRLLifecycle(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.CRLValidity = time.Hour })
	addr := h.serve()
	if _, err := enroll(t, h.dial(addr, nil), h.addCluster("east", "east.example")); err != nil {
		t.Fatal(err)
	}
	h.addCluster("west", "west.example")
	bg := context.Background()
	if _, err := h.root.revoke(bg, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Cluster{Cluster: "east"}}, "admin:test"); err != nil {
		t.Fatal(err)
	}
	crlOf := func() (*trust.TrustBundle, []*x509.RevocationList) {
		t.Helper()
		b, _ := h.root.Current()
		d, _ := b.Domain(spiffeid.RequireTrustDomainFromString("west.example"))
		var rls []*x509.RevocationList
		for _, c := range d.CRLs {
			rl, _, err := trust.VerifyCRL(c, d.Roots, h.clock.Now())
			if err != nil {
				t.Fatalf("bundle %d: %v", b.Sequence, err)
			}
			rls = append(rls, rl)
		}
		return b, rls
	}
	b1, first := crlOf()
	if len(first) != 1 || len(first[0].RevokedCertificateEntries) != 1 ||
		first[0].NextUpdate.Sub(h.clock.Now()) != time.Hour {
		t.Fatalf("root CRLs %+v; want one, valid 1h, listing one intermediate", first)
	}

	// Before half-life: nothing new.
	h.clock.Advance(29 * time.Minute)
	h.refresh()
	if b, _ := crlOf(); b != b1 {
		t.Fatal("the bundle changed before the CRL's half-life")
	}
	// After: re-signed, with a higher number, in a new signed bundle.
	h.clock.Advance(2 * time.Minute)
	h.refresh()
	b2, second := crlOf()
	if b2.Sequence <= b1.Sequence || len(second) != 1 || second[0].Number.Cmp(first[0].Number) <= 0 ||
		!second[0].ThisUpdate.After(first[0].ThisUpdate) {
		t.Fatalf("after half-life: bundle %d -> %d, CRLs %+v", b1.Sequence, b2.Sequence, second)
	}
	wantBundleSigned(t, h, b2)

	// A new root joins the bundle: it signs a CRL too.
	if _, err := h.root.rotate(bg, 0, "admin:test", false); err != nil {
		t.Fatal(err)
	}
	b3, third := crlOf()
	if len(third) != 2 {
		t.Fatalf("%d root CRLs after a rotation, want 2", len(third))
	}
	wantBundleSigned(t, h, b3)

	// The intermediate expires: its entry and the CRLs go.
	h.clock.Advance(h.cfg.IntermediateTTL)
	h.refresh()
	b4, last := crlOf()
	if d, _ := b4.Domain(spiffeid.RequireTrustDomainFromString("west.example")); len(last) != len(d.Roots.Roots()) {
		t.Fatalf("%d root CRLs after the revoked intermediate expired, want one (empty) per root in the bundle", len(last))
	}
	for _, rl := range last {
		if len(rl.RevokedCertificateEntries) != 0 {
			t.Fatal("a root CRL still lists the expired intermediate")
		}
	}
	wantBundleSigned(t, h, b4)
}
