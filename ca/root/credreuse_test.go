package root

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.step.sm/crypto/pemutil"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// credHarness is a root on the embedded store with a metrics registry, and
// real issuer clients (issuer.Upstream) talking to it over mutual TLS.
type credHarness struct {
	*harness
	db   *hookStore
	reg  *prometheus.Registry
	addr string
}

// hookStore is the SQLite store with test hooks on the calls a renewal
// makes: afterRead runs after each ClusterCredential read, failRecord is
// returned once by the next RecordIntermediate.
type hookStore struct {
	*sqlite.Store
	mu         sync.Mutex
	afterRead  func()
	failRecord error
}

func (s *hookStore) ClusterCredential(ctx context.Context, cluster, replica string) (store.ClusterCredential, error) {
	rec, err := s.Store.ClusterCredential(ctx, cluster, replica)
	s.mu.Lock()
	hook := s.afterRead
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return rec, err
}

func (s *hookStore) RecordIntermediate(ctx context.Context, in store.Intermediate, ev store.AuditEvent) error {
	s.mu.Lock()
	err := s.failRecord
	s.failRecord = nil
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.RecordIntermediate(ctx, in, ev)
}

func newCredHarness(t *testing.T) *credHarness {
	t.Helper()
	clock := newFakeClock()
	db, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "root.db"), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ch := &credHarness{db: &hookStore{Store: db}, reg: prometheus.NewRegistry()}
	ch.harness = newHarness(t, func(c *Config) { c.Store = ch.db; c.Now = clock.Now; c.Registerer = ch.reg })
	ch.clock = clock
	ch.addr = ch.serve()
	return ch
}

// upstream is an issuer's client of the root keeping its credential in dir.
func (h *credHarness) upstream(dir, token string) *issuer.Upstream {
	h.t.Helper()
	roots, err := trust.NewBundle(h.activeRoot())
	if err != nil {
		h.t.Fatal(err)
	}
	up, err := issuer.NewUpstream(issuer.UpstreamConfig{
		Address: h.addr, ServerName: "localhost", Roots: roots, JoinToken: token, CredentialDir: dir,
		Now: h.clock.Now, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return up
}

// newIntermediate renews (or enrols) up a minute later.
func (h *credHarness) newIntermediate(up *issuer.Upstream) error {
	h.t.Helper()
	h.clock.Advance(time.Minute)
	_, _, err := up.NewIntermediate(context.Background())
	return err
}

// reuseCount is meshca_root_credential_reuse_total{cluster}.
func (h *credHarness) reuseCount(cluster string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != reuseMetricName {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cluster" && l.GetValue() == cluster {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (h *credHarness) audited(action string) []store.AuditEvent {
	h.t.Helper()
	evs, err := h.db.AuditEvents(context.Background(), time.Time{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, ev := range evs {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

// copyCredential copies an issuer's credential directory, as a thief with
// read access to the issuer's disk would.
func copyCredential(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, name := range []string{"credential.pem", "credential-key.pem", "roots.pem"} {
		data, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

func wantRejected(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, issuer.ErrRejected) {
		t.Fatalf("%s: %v, want the root to reject the credential", what, err)
	}
}

// TestCopiedCredentialReuse copies an enrolled issuer's credential files
// and renews with the copy and with the original. The root accepts only the
// newest credential (and its predecessor until the newest is used), so one
// of them presents a credential the root replaced: the root refuses it,
// logs, counts and audits the reuse, and revokes the cluster's credentials.
// Both parties are locked out until the administrator re-enrols the issuer;
// the thief's credentials, older than that enrolment, stay refused without
// revoking the new lineage again.
func TestCopiedCredentialReuse(t *testing.T) {
	for _, tc := range []struct {
		name string
		// attack runs the copy and the original; it returns the error
		// of the call that must be refused as reuse.
		attack func(h *credHarness, thief, orig *issuer.Upstream) error
	}{
		{"the copy renews twice, then the original renews", func(h *credHarness, thief, orig *issuer.Upstream) error {
			for range 2 {
				if err := h.newIntermediate(thief); err != nil {
					h.t.Fatalf("renewal with the copy: %v", err)
				}
			}
			return h.newIntermediate(orig)
		}},
		{"the copy renews and publishes, then the original renews", func(h *credHarness, thief, orig *issuer.Upstream) error {
			if err := h.newIntermediate(thief); err != nil {
				h.t.Fatalf("renewal with the copy: %v", err)
			}
			if err := thief.PublishCRLs(context.Background(), nil); err != nil {
				h.t.Fatalf("publish with the copy's new credential: %v", err)
			}
			return h.newIntermediate(orig)
		}},
		{"the copy renews, the original renews, then the copy renews", func(h *credHarness, thief, orig *issuer.Upstream) error {
			if err := h.newIntermediate(thief); err != nil {
				h.t.Fatalf("renewal with the copy: %v", err)
			}
			// The copy's new credential is unused: to the root this is
			// the original retrying a renewal whose answer it lost.
			if err := h.newIntermediate(orig); err != nil {
				h.t.Fatalf("renewal with the original: %v", err)
			}
			return h.newIntermediate(thief)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newCredHarness(t)
			origDir := t.TempDir()
			orig := h.upstream(origDir, h.addCluster("east", "east.example"))
			if err := h.newIntermediate(orig); err != nil {
				t.Fatalf("enrol: %v", err)
			}
			thief := h.upstream(copyCredential(t, origDir), "")

			wantRejected(t, "renewal with a reused credential", tc.attack(h, thief, orig))
			if n := h.reuseCount("east"); n != 1 {
				t.Fatalf("%s = %v, want 1", reuseMetricName, n)
			}
			evs := h.audited("credential.reuse")
			if len(evs) != 1 || evs[0].Cluster != "east" || evs[0].Serial == "" || !strings.Contains(evs[0].Detail, "revoked") {
				t.Fatalf("credential.reuse audit events: %+v", evs)
			}
			if countLines(h.logs.String(), `level=ERROR msg="credential reuse`) != 1 {
				t.Fatalf("the reuse was not logged once at ERROR:\n%s", h.logs.String())
			}
			// Every credential of the cluster is revoked: neither party
			// renews or publishes.
			wantRejected(t, "the copy after the reuse", h.newIntermediate(thief))
			wantRejected(t, "the original after the reuse", h.newIntermediate(orig))
			wantRejected(t, "publish after the reuse", orig.PublishCRLs(context.Background(), nil))

			// The administrator issues a new join token; the real issuer
			// enrols again from an empty directory.
			h.clock.Advance(time.Hour)
			fresh := h.upstream(t.TempDir(), h.addCluster("east", "east.example"))
			if err := h.newIntermediate(fresh); err != nil {
				t.Fatalf("enrol again: %v", err)
			}
			wantRejected(t, "the copy after the new enrolment", h.newIntermediate(thief))
			if err := h.newIntermediate(fresh); err != nil {
				t.Fatalf("renewal after the new enrolment, once the copy tried: %v", err)
			}
			if n := h.reuseCount("east"); n != 1 {
				t.Fatalf("%s = %v after the new enrolment, want still 1", reuseMetricName, n)
			}
			if !strings.Contains(h.logs.String(), "credential of an earlier enrolment refused") {
				t.Fatal("the refusal of the old credential was not logged")
			}
		})
	}
}

// TestLostRenewalRetry: the root replaced the credential but the issuer
// never got the new one (here the renewal failed after the swap, as when
// the answer is lost). The issuer retries with the credential it has, and
// the root accepts it because its successor was never used. Once the
// successor has been used, the old credential is dead: presenting it is
// reuse.
func TestLostRenewalRetry(t *testing.T) {
	h := newCredHarness(t)
	dir := t.TempDir()
	up := h.upstream(dir, h.addCluster("east", "east.example"))
	if err := h.newIntermediate(up); err != nil {
		t.Fatalf("enrol: %v", err)
	}
	stale := copyCredential(t, dir) // the credential the issuer retries with

	h.db.mu.Lock()
	h.db.failRecord = errors.New("connection reset")
	h.db.mu.Unlock()
	if err := h.newIntermediate(up); err == nil || errors.Is(err, issuer.ErrRejected) {
		t.Fatalf("renewal with a failing store: %v, want a retryable error", err)
	}
	if rec, err := h.db.ClusterCredential(context.Background(), "east", ""); err != nil || rec.Previous == "" || rec.CurrentUsed {
		t.Fatalf("the failed renewal did not replace the credential: %+v, %v", rec, err)
	}
	// The retry with the predecessor, twice (each answer lost again is
	// the same case), then the new credential's first use.
	for range 2 {
		if err := h.newIntermediate(h.upstream(copyCredential(t, stale), "")); err != nil {
			t.Fatalf("retry with the predecessor: %v", err)
		}
	}
	if err := h.newIntermediate(up); err != nil {
		t.Fatalf("retry by the issuer: %v", err)
	}
	if err := up.PublishCRLs(context.Background(), nil); err != nil {
		t.Fatalf("publish with the new credential: %v", err)
	}
	if n := h.reuseCount("east"); n != 0 {
		t.Fatalf("%s = %v after honest retries, want 0", reuseMetricName, n)
	}
	if evs := h.audited("credential.confirm"); len(evs) != 1 {
		t.Fatalf("credential.confirm audit events: %+v", evs)
	}

	// The predecessor of a used credential.
	before := copyCredential(t, dir)
	if err := h.newIntermediate(up); err != nil {
		t.Fatal(err)
	}
	if err := up.PublishCRLs(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	wantRejected(t, "renewal with the predecessor of a used credential", h.newIntermediate(h.upstream(before, "")))
	if n := h.reuseCount("east"); n != 1 {
		t.Fatalf("%s = %v, want 1", reuseMetricName, n)
	}
}

// TestRevokedCredentialRefused revokes an issuer credential by serial on
// the root's admin socket: the issuer can neither renew nor publish with
// it, until it enrols again with a new join token.
func TestRevokedCredentialRefused(t *testing.T) {
	h := newCredHarness(t)
	dir := t.TempDir()
	up := h.upstream(dir, h.addCluster("east", "east.example"))
	if err := h.newIntermediate(up); err != nil {
		t.Fatalf("enrol: %v", err)
	}
	cred, err := pemutil.ParseCertificateBundle(mustRead(t, filepath.Join(dir, "credential.pem")))
	if err != nil {
		t.Fatal(err)
	}
	serial := trust.SerialHex(cred[0].SerialNumber)
	resp, err := h.adminClient().Revoke(context.Background(), &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_Serial{Serial: strings.ToUpper(serial)}, Reason: "key compromise",
	})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if got := resp.GetRevocation(); got.GetKind() != store.RevokeSerial || got.GetValue() != serial {
		t.Fatalf("revocation %+v, want serial %s", got, serial)
	}
	if evs := h.audited("revocation.add"); len(evs) != 1 || evs[0].Serial != serial {
		t.Fatalf("certificate.revoke audit events: %+v", evs)
	}
	wantRejected(t, "renewal with a revoked credential", h.newIntermediate(up))
	wantRejected(t, "publish with a revoked credential", up.PublishCRLs(context.Background(), nil))
	if !strings.Contains(h.logs.String(), "credential serial "+serial+" of cluster east is revoked") {
		t.Fatalf("the refusal was not logged with its reason:\n%s", h.logs.String())
	}
	if n := h.reuseCount("east"); n != 0 {
		t.Fatalf("a revoked credential counted as reuse: %v", n)
	}

	h.clock.Advance(time.Hour)
	fresh := h.upstream(t.TempDir(), h.addCluster("east", "east.example"))
	if err := h.newIntermediate(fresh); err != nil {
		t.Fatalf("enrol again: %v", err)
	}
	if err := h.newIntermediate(fresh); err != nil {
		t.Fatalf("renewal after enrolling again: %v", err)
	}
}

// TestConcurrentRenewalsWithOneCredential: two renewals with the same
// credential that both read the cluster's record before either records its
// new credential. Exactly one succeeds.
func TestConcurrentRenewalsWithOneCredential(t *testing.T) {
	h := newCredHarness(t)
	iss, err := enroll(t, h.dial(h.addr, nil), h.addCluster("east", "east.example"))
	if err != nil {
		t.Fatal(err)
	}
	// Both reads happen before either swap: each, having read, waits for
	// the other to have read too. (Waiting before the read would let one
	// renewal read after the other's swap: that is the honest retry with
	// the predecessor, which succeeds by design.)
	var arrived sync.WaitGroup
	arrived.Add(2)
	h.db.mu.Lock()
	h.db.afterRead = func() {
		arrived.Done()
		arrived.Wait()
	}
	h.db.mu.Unlock()
	h.clock.Advance(time.Minute)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = renew(t, h.dial(h.addr, iss.tlsCert()), iss, true) })
	}
	wg.Wait()
	h.db.mu.Lock()
	h.db.afterRead = nil
	h.db.mu.Unlock()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 2 concurrent renewals with one credential succeeded (%v), want exactly 1", ok, errs)
	}
	if !strings.Contains(h.logs.String(), "credential used concurrently") {
		t.Fatalf("the lost race was not logged:\n%s", h.logs.String())
	}
	if n := len(h.audited("credential.issue")); n != 2 {
		t.Fatalf("%d credentials recorded, want 2 (the enrolment's and the winner's)", n)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestJudgeCredential(t *testing.T) {
	since := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := func(serial int64, notBefore time.Time) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: notBefore}
	}
	rec := func(used, revoked bool) store.ClusterCredential {
		return store.ClusterCredential{Cluster: "east", Current: "b", Previous: "a", CurrentUsed: used, Revoked: revoked, Since: since}
	}
	later := since.Add(time.Hour)
	for _, tc := range []struct {
		name  string
		rec   store.ClusterCredential
		found bool
		leaf  *x509.Certificate
		want  verdict
	}{
		{"no record", store.ClusterCredential{}, false, leaf(0xa, later), adopt},
		{"current", rec(false, false), true, leaf(0xb, later), accept},
		{"current, used", rec(true, false), true, leaf(0xb, later), accept},
		{"previous, current unused", rec(false, false), true, leaf(0xa, later), accept},
		{"previous, current used", rec(true, false), true, leaf(0xa, later), reuse},
		{"other of this enrolment", rec(false, false), true, leaf(0xc, later), reuse},
		{"current in the second of the last enrolment", rec(false, false), true, leaf(0xb, since), accept},
		{"from an earlier enrolment", rec(false, false), true, leaf(0xc, since.Add(-time.Second)), earlier},
		{"from an earlier enrolment, same second", rec(false, false), true, leaf(0xc, since), earlier},
		{"lineage revoked", rec(false, true), true, leaf(0xb, later), lineageRevoked},
		{"no previous after enrolment", store.ClusterCredential{Cluster: "east", Current: "b", Since: since}, true, leaf(0xa, later), reuse},
		{"no earlier enrolment", store.ClusterCredential{Cluster: "east", Current: "b", Previous: "a", CurrentUsed: true}, true,
			leaf(0xa, time.Time{}), reuse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := judgeCredential(tc.rec, tc.found, tc.leaf); got != tc.want {
				t.Fatalf("judgeCredential = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWatchWithPredecessorIsNoReuse: an issuer's bundle watch may reconnect
// with the credential a renewal has just replaced, even after the new one
// was used; that is no reuse (a watch reads only what GetBundle gives
// anyone). An older credential is refused without raising the alarm.
func TestWatchWithPredecessorIsNoReuse(t *testing.T) {
	h := newCredHarness(t)
	dir := t.TempDir()
	up := h.upstream(dir, h.addCluster("east", "east.example"))
	if err := h.newIntermediate(up); err != nil {
		t.Fatalf("enrol: %v", err)
	}
	older := copyCredential(t, dir)
	if err := h.newIntermediate(up); err != nil {
		t.Fatal(err)
	}
	before := copyCredential(t, dir)
	if err := h.newIntermediate(up); err != nil {
		t.Fatal(err)
	}
	if err := up.PublishCRLs(context.Background(), nil); err != nil {
		t.Fatalf("publish with the new credential: %v", err)
	}
	watched := func(dir string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		got := false
		_ = h.upstream(dir, "").WatchBundle(ctx, func(*trust.TrustBundle) { got = true; cancel() })
		return got
	}
	if !watched(copyCredential(t, before)) {
		t.Fatal("the predecessor of the current credential could not watch the bundle")
	}
	if watched(copyCredential(t, older)) {
		t.Fatal("a credential two renewals old watched the bundle")
	}
	if n := h.reuseCount("east"); n != 0 {
		t.Fatalf("%s = %v after bundle watches, want 0", reuseMetricName, n)
	}
	if err := h.newIntermediate(up); err != nil {
		t.Fatalf("the issuer after the watches: %v", err)
	}
}
