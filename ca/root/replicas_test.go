package root

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
	"google.golang.org/grpc/codes"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// addReplicated registers cluster name with a join token for replicas
// issuer replicas and returns the token.
func (h *credHarness) addReplicated(name, td string, replicas int32) string {
	h.t.Helper()
	resp, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{
		Name: name, TrustDomain: td, Replicas: replicas, TokenTtlSeconds: int64(30 * 24 * time.Hour / time.Second),
	}, "admin:test")
	if err != nil {
		h.t.Fatalf("add cluster %s for %d replicas: %v", name, replicas, err)
	}
	return resp.GetJoinToken()
}

// replica is an issuer replica's client of the root, named name, keeping
// its credential in dir and its join token in dir/../token.
func (h *credHarness) replica(dir, name, token string) (*issuer.Upstream, string) {
	h.t.Helper()
	roots, err := trust.NewBundle(h.activeRoot())
	if err != nil {
		h.t.Fatal(err)
	}
	tokenFile := filepath.Join(h.t.TempDir(), "join-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		h.t.Fatal(err)
	}
	up, err := issuer.NewUpstream(issuer.UpstreamConfig{
		Address: h.addr, ServerName: "localhost", Roots: roots, JoinToken: token, JoinTokenFile: tokenFile,
		Replica: name, CredentialDir: dir, Now: h.clock.Now, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return up, tokenFile
}

func credentialURI(t *testing.T, dir string) string {
	t.Helper()
	c, err := pemutil.ReadCertificate(filepath.Join(dir, "credential.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.URIs) != 1 {
		t.Fatalf("credential URIs %v", c.URIs)
	}
	return c.URIs[0].String()
}

// TestIssuerReplicasShareJoinToken: N replicas of one cluster's issuer
// enrol with one join token, each under its own name, with its own
// credential lineage and intermediates. A replica beyond N is refused while
// N are live; a replica that re-enrols under its name takes no new place;
// a replica gone for an intermediate lifetime frees its place. The lineage
// rule holds per replica: a copied credential of one replica revokes that
// replica's lineage only.
func TestIssuerReplicasShareJoinToken(t *testing.T) {
	h := newCredHarness(t)
	token := h.addReplicated("east", "east.example", 2)
	dir0, dir1 := t.TempDir(), t.TempDir()
	r0, tokenFile := h.replica(dir0, "east-0", token)
	r1, _ := h.replica(dir1, "east-1", token)
	for name, up := range map[string]*issuer.Upstream{"east-0": r0, "east-1": r1} {
		if err := h.newIntermediate(up); err != nil {
			t.Fatalf("enrol %s: %v", name, err)
		}
	}
	if _, err := os.Stat(tokenFile); err != nil {
		t.Fatalf("the shared join token file was removed: %v", err)
	}
	if got, want := credentialURI(t, dir0), "spiffe://east.example/meshca/cluster/east/east-0"; got != want {
		t.Fatalf("east-0's credential names %s, want %s", got, want)
	}
	if got, want := credentialURI(t, dir1), "spiffe://east.example/meshca/cluster/east/east-1"; got != want {
		t.Fatalf("east-1's credential names %s, want %s", got, want)
	}

	// A third replica: refused, clearly, while two are live.
	r2, _ := h.replica(t.TempDir(), "east-2", token)
	err := h.newIntermediate(r2)
	if !strings.Contains(err.Error(), "live issuer replicas") || !strings.Contains(err.Error(), "east-0, east-1") {
		t.Fatalf("a third replica of a 2-replica token: %v, want a refusal naming the live replicas", err)
	}
	// Unnamed: refused with what to set.
	if _, err := h.root.enroll(context.Background(), enrollRequest(t, token, "")); !errors.Is(err, grpcx.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "upstream.replica") {
		t.Fatalf("unnamed enrolment with a replicas token: %v, want invalid argument naming upstream.replica", err)
	}
	if _, err := h.root.enroll(context.Background(), enrollRequest(t, token, "Bad.Name")); !errors.Is(err, grpcx.ErrInvalidArgument) {
		t.Fatalf("enrolment as replica Bad.Name: %v, want invalid argument", err)
	}

	// east-0 lost its disk: it enrols again under its name, in its place;
	// its old credential is then of an earlier enrolment.
	old0 := copyCredential(t, dir0)
	h.clock.Advance(2 * time.Second)
	again0, _ := h.replica(t.TempDir(), "east-0", token)
	if err := h.newIntermediate(again0); err != nil {
		t.Fatalf("east-0 enrolling again under its name: %v", err)
	}
	stale, _ := h.replica(old0, "east-0", "")
	wantRejected(t, "east-0's credential from before it enrolled again", h.newIntermediate(stale))

	// A copy of east-1's credential: reuse revokes east-1's lineage only.
	thief, _ := h.replica(copyCredential(t, dir1), "east-1", "")
	if err := h.newIntermediate(thief); err != nil {
		t.Fatalf("renewal with the copy: %v", err)
	}
	if err := h.newIntermediate(thief); err != nil {
		t.Fatalf("second renewal with the copy: %v", err)
	}
	wantRejected(t, "east-1 after its copy renewed", h.newIntermediate(r1))
	if n := h.reuseCount("east"); n != 1 {
		t.Fatalf("%s = %v, want 1", reuseMetricName, n)
	}
	if err := h.newIntermediate(again0); err != nil {
		t.Fatalf("east-0 after east-1's reuse: %v", err)
	}

	// east-1's lineage is revoked: its place is free for east-2.
	if err := h.newIntermediate(r2); err != nil {
		t.Fatalf("east-2 once east-1's lineage is revoked: %v", err)
	}
	// Now east-0 and east-2 are live; east-3 waits until one has been
	// silent for an intermediate lifetime (2h here).
	r3, _ := h.replica(t.TempDir(), "east-3", token)
	if err := h.newIntermediate(r3); err == nil {
		t.Fatal("east-3 enrolled while east-0 and east-2 are live")
	}
	h.clock.Advance(90 * time.Minute)
	if err := h.newIntermediate(again0); err != nil {
		t.Fatalf("east-0 renewing: %v", err)
	}
	h.clock.Advance(45 * time.Minute)
	if err := h.newIntermediate(r3); err != nil {
		t.Fatalf("east-3 once east-2 was silent for an intermediate lifetime: %v", err)
	}
	if n := len(h.audited("credential.reuse")); n != 1 {
		t.Fatalf("%d credential.reuse events, want 1", n)
	}

	// Revoking a replica's current credential removes it at once: it is
	// refused, and its place is free.
	rec, err := h.db.ClusterCredential(context.Background(), "east", "east-3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.adminClient().Revoke(context.Background(), &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_Serial{Serial: rec.Current}, Reason: "replica removed",
	}); err != nil {
		t.Fatalf("revoke east-3's credential: %v", err)
	}
	wantRejected(t, "east-3 after its credential was revoked", h.newIntermediate(r3))
	r4, _ := h.replica(t.TempDir(), "east-4", token)
	if err := h.newIntermediate(r4); err != nil {
		t.Fatalf("east-4 once east-3's credential is revoked: %v", err)
	}
}

// TestOneTimeTokenIgnoresReplicaName: a one-time token enrols the
// cluster's single issuer whatever replica name it sends (a host name with
// dots included), and is used up.
func TestOneTimeTokenIgnoresReplicaName(t *testing.T) {
	h := newCredHarness(t)
	token := h.addCluster("east", "east.example")
	dir := t.TempDir()
	up, tokenFile := h.replica(dir, "Host.With.Dots", token)
	if err := h.newIntermediate(up); err != nil {
		t.Fatalf("enrol: %v", err)
	}
	if got, want := credentialURI(t, dir), "spiffe://east.example/meshca/cluster/east"; got != want {
		t.Fatalf("credential names %s, want %s", got, want)
	}
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Fatalf("the spent one-time token file is still there: %v", err)
	}
	second, _ := h.replica(t.TempDir(), "east-1", token)
	if err := h.newIntermediate(second); err == nil {
		t.Fatal("a spent one-time token enrolled a second replica")
	}
}

// TestAddClusterReplicasBounds: the number of replicas and the life of a
// shared token are bounded; a one-time token keeps the short bound.
func TestAddClusterReplicasBounds(t *testing.T) {
	h := newHarness(t, nil)
	for _, req := range []*meshcav1.AddClusterRequest{
		{Name: "east", TrustDomain: "east.example", Replicas: 65},
		{Name: "east", TrustDomain: "east.example", Replicas: 3, TokenTtlSeconds: int64(91 * 24 * time.Hour / time.Second)},
		{Name: "east", TrustDomain: "east.example", TokenTtlSeconds: int64(8 * 24 * time.Hour / time.Second)},
	} {
		if _, err := h.root.addCluster(context.Background(), req, "admin:test"); err == nil {
			t.Errorf("AddCluster(%v) accepted", req)
		}
	}
	if _, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{
		Name: "east", TrustDomain: "east.example", Replicas: 3, TokenTtlSeconds: int64(90 * 24 * time.Hour / time.Second),
	}, "admin:test"); err != nil {
		t.Fatalf("a 90-day token for 3 replicas: %v", err)
	}
}

// enrollRequest is an Enroll request with fresh CSRs.
func enrollRequest(t *testing.T, token, replica string) *meshcav1.EnrollRequest {
	t.Helper()
	return &meshcav1.EnrollRequest{JoinToken: token, Replica: replica,
		CredentialCsr: csrFor(t, newKey(t)), IntermediateCsr: csrFor(t, newKey(t))}
}

// TestConcurrentReplicaEnrolmentsBounded: replicas+extra issuers enrolling
// at once with one token for replicas, each under a new name, over the
// root service: exactly replicas of them are admitted, the others refused
// with FailedPrecondition.
func TestConcurrentReplicaEnrolmentsBounded(t *testing.T) {
	const replicas, extra = 3, 9
	h := newHarness(t, nil)
	addr := h.serve()
	resp, err := h.root.addCluster(context.Background(), &meshcav1.AddClusterRequest{
		Name: "east", TrustDomain: "east.example", Replicas: replicas, TokenTtlSeconds: int64(24 * time.Hour / time.Second),
	}, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	client := meshcav1.NewRootServiceClient(h.dial(addr, nil))
	reqs := make([]*meshcav1.EnrollRequest, replicas+extra)
	for i := range reqs {
		reqs[i] = enrollRequest(t, resp.GetJoinToken(), fmt.Sprintf("east-%d", i))
	}
	start := make(chan struct{})
	errs := make(chan error, len(reqs))
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			<-start
			_, err := client.Enroll(context.Background(), req)
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	admitted := 0
	for err := range errs {
		if err == nil {
			admitted++
			continue
		}
		wantCode(t, err, codes.FailedPrecondition)
	}
	recs, err := h.db.ClusterCredentials(context.Background(), "east")
	if err != nil {
		t.Fatal(err)
	}
	if admitted != replicas || len(recs) != replicas {
		t.Fatalf("%d of %d concurrent enrolments admitted, %d lineages recorded; want %d and %d",
			admitted, len(reqs), len(recs), replicas, replicas)
	}
}
