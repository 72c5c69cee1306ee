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
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

// memStore is a cluster store in memory: it records issued certificates
// and keeps the deny-list. failRevocations and failCertificates make those
// reads fail as an unreachable database does; hold, when set, makes the
// next Revocations call wait for it after taking its snapshot; onRecord
// runs after each recorded certificate.
type memStore struct {
	mu               sync.Mutex
	certs            []store.Certificate
	revs             []store.Revocation
	lastID           int64
	failRevocations  bool
	failCertificates bool
	hold             chan struct{}
	onRecord         func()
}

var (
	_ issuer.Recorder          = (*memStore)(nil)
	_ issuer.RevocationLister  = (*memStore)(nil)
	_ issuer.CertificateLister = (*memStore)(nil)
)

var errStoreDown = errors.New("store unreachable")

func (m *memStore) RecordIssuance(_ context.Context, c store.Certificate, _ store.AuditEvent) error {
	m.mu.Lock()
	m.certs = append(m.certs, c)
	hook := m.onRecord
	m.mu.Unlock()
	if hook != nil {
		hook()
	}
	return nil
}

func (m *memStore) Certificates(_ context.Context, f store.CertificateFilter) ([]store.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failCertificates {
		return nil, errStoreDown
	}
	var out []store.Certificate
	for _, c := range m.certs {
		if (f.SPIFFEID == "" || c.SPIFFEID == f.SPIFFEID) && (f.Cluster == "" || c.Cluster == f.Cluster) &&
			(f.ActiveAt.IsZero() || (!f.ActiveAt.Before(c.NotBefore) && !f.ActiveAt.After(c.NotAfter))) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (m *memStore) Revocations(_ context.Context, now time.Time) ([]store.Revocation, error) {
	m.mu.Lock()
	if m.failRevocations {
		m.mu.Unlock()
		return nil, errStoreDown
	}
	var out []store.Revocation
	for _, r := range m.revs {
		if r.ExpiresAt.IsZero() || r.ExpiresAt.After(now) {
			out = append(out, r)
		}
	}
	hold := m.hold
	m.hold = nil
	m.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return out, nil
}

// revoke puts a revocation in force, with a new ID as the real stores do.
func (m *memStore) revoke(kind, value, cluster string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastID++
	m.revs = append(m.revs, store.Revocation{ID: m.lastID, Kind: kind, Value: value, Cluster: cluster,
		RevokedBy: "admin:test", RevokedAt: time.Now()})
}

// unrevoke removes the entry. Unlike the real stores it does not keep the
// identity's certificates revoked by serial: its callers test the deny-list.
func (m *memStore) unrevoke(kind, value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revs = slices.DeleteFunc(m.revs, func(r store.Revocation) bool { return r.Kind == kind && r.Value == value })
}

func (m *memStore) setFail(revocations, certificates bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failRevocations, m.failCertificates = revocations, certificates
}

func (m *memStore) serials(spiffeID string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, c := range m.certs {
		if c.SPIFFEID == spiffeID {
			out = append(out, c.Serial)
		}
	}
	return out
}

// newDenyingIssuer returns an issuer of tree that records to rec, refuses
// what dl denies and attests goodToken as default/web.
func newDenyingIssuer(t *testing.T, tree *testkit.Tree, rec issuer.Recorder, dl *issuer.DenyList) *issuer.Issuer {
	t.Helper()
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}}},
		Recorder: rec, DenyList: dl, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func newDenyList(t *testing.T, lister issuer.RevocationLister, log *slog.Logger) *issuer.DenyList {
	t.Helper()
	dl, err := issuer.NewDenyList(issuer.DenyListConfig{Store: lister, Cluster: "dev", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return dl
}

// runInBackground runs fn(ctx) until the test ends and checks it returns
// nil (testkit.Go, whose early stop these tests do not need).
func runInBackground(t *testing.T, name string, fn func(context.Context) error) {
	t.Helper()
	testkit.Go(t, name, fn)
}

func TestDenyListFollowsTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &memStore{}
		log, logs := captureLogs(t)
		dl := newDenyList(t, db, log)
		if set, _ := dl.Current(); set.Version != 0 || !dl.Stale(time.Now()) {
			t.Fatalf("before the first load: version %d, stale %v; want 0 and stale", set.Version, dl.Stale(time.Now()))
		}
		runInBackground(t, "Run", dl.Run)
		synctest.Wait()
		loaded, changed := dl.Current()
		if loaded.Version != 1 || dl.Stale(time.Now()) {
			t.Fatalf("after Run started: version %d, stale %v; want 1 and fresh", loaded.Version, dl.Stale(time.Now()))
		}

		const other = "spiffe://cluster.local/ns/default/sa/api"
		db.revoke(store.RevokeSPIFFEID, webID, "dev")
		db.revoke(store.RevokeSerial, "ABCDEF01", "")
		db.revoke(store.RevokeSPIFFEID, other, "west") // another cluster's
		db.revoke(store.RevokeCluster, "dev", "")      // the root's business
		synctest.Wait()
		if _, ok := dl.Revoked(webID); ok {
			t.Fatal("revoked before the next poll")
		}
		time.Sleep(issuer.DefaultDenyPollInterval)
		synctest.Wait()
		select {
		case <-changed:
		default:
			t.Fatal("the change channel was not closed")
		}
		if r, ok := dl.Revoked(webID); !ok || r.Kind != store.RevokeSPIFFEID {
			t.Errorf("Revoked(%s) = %+v, %v; want the revocation", webID, r, ok)
		}
		if _, ok := dl.RevokedSerial("abcdef01"); !ok {
			t.Error("the serial revocation is not in force (case-insensitive)")
		}
		if _, ok := dl.Revoked(other); ok {
			t.Error("another cluster's revocation applies here")
		}
		set, changed := dl.Current()
		if set.Version != 2 || len(set.Serials) != 1 || len(set.SPIFFEIDs) != 1 {
			t.Fatalf("set %d with %d serials and %d SPIFFE IDs, want 2 with 1 and 1", set.Version, len(set.Serials), len(set.SPIFFEIDs))
		}

		time.Sleep(3 * issuer.DefaultDenyPollInterval) // no change
		synctest.Wait()
		select {
		case <-changed:
			t.Fatal("the change channel was closed without a change")
		default:
		}

		db.unrevoke(store.RevokeSPIFFEID, webID)
		if err := dl.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, ok := dl.Revoked(webID); ok {
			t.Error("still revoked after Refresh")
		}
		if set, _ := dl.Current(); set.Version != 3 {
			t.Errorf("version %d after the lift, want 3", set.Version)
		}
		if !strings.Contains(logs.String(), "revocation deny-list changed") {
			t.Error("changes not logged")
		}
	})
}

func TestDenyListStaleWhenStoreUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &memStore{}
		db.revoke(store.RevokeSerial, "01", "dev")
		log, logs := captureLogs(t)
		dl := newDenyList(t, db, log)
		runInBackground(t, "Run", dl.Run)
		synctest.Wait()
		db.setFail(true, false)
		last := dl.LoadedAt()

		sleepUntil(last.Add(issuer.DefaultDenyMaxStale))
		if dl.Stale(time.Now()) {
			t.Fatal("stale at exactly the staleness limit")
		}
		sleepUntil(last.Add(issuer.DefaultDenyMaxStale + time.Second))
		if !dl.Stale(time.Now()) {
			t.Fatal("not stale past the limit")
		}
		if _, ok := dl.RevokedSerial("01"); !ok {
			t.Error("the last list was dropped")
		}
		text := logs.String()
		if strings.Count(text, "loading the revocation deny-list failed") != 1 ||
			strings.Count(text, `"level":"ERROR","msg":"the revocation deny-list is stale`) != 1 {
			t.Errorf("want one warning and one error for the outage, got logs:\n%s", text)
		}

		db.setFail(false, false)
		time.Sleep(issuer.DefaultDenyPollInterval)
		synctest.Wait()
		if dl.Stale(time.Now()) || !strings.Contains(logs.String(), "revocation deny-list loaded again") {
			t.Error("not fresh (or not logged) once the store is back")
		}
	})
}

func TestDenyListOlderLoadNeverReplacesNewer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &memStore{hold: make(chan struct{})}
		dl := newDenyList(t, db, slog.New(slog.DiscardHandler))
		release := db.hold
		slow := make(chan error, 1)
		go func() { slow <- dl.Refresh(context.Background()) }() // reads the empty list, then waits
		synctest.Wait()
		db.revoke(store.RevokeSPIFFEID, webID, "dev")
		if err := dl.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		close(release)
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
		if _, ok := dl.Revoked(webID); !ok {
			t.Fatal("an older load replaced a newer one")
		}
	})
}

func TestIssueRefusesRevokedIdentity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &memStore{}
		dl := newDenyList(t, db, slog.New(slog.DiscardHandler))
		tree := testkit.New(t, testkit.Options{})
		iss := newDenyingIssuer(t, tree, db, dl)
		issue := func() error {
			_, err := iss.Issue(t.Context(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
			return err
		}
		if err := issue(); !errors.Is(err, issuer.ErrUnavailable) {
			t.Fatalf("before the deny-list loaded: %v, want ErrUnavailable", err)
		}
		if err := dl.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := issue(); err != nil {
			t.Fatal(err)
		}
		db.revoke(store.RevokeSPIFFEID, webID, "dev")
		if err := dl.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		err := issue()
		if !errors.Is(err, issuer.ErrPermissionDenied) || !strings.Contains(err.Error(), webID+": identity revoked") {
			t.Fatalf("revoked identity: %v, want ErrPermissionDenied naming %s", err, webID)
		}
		if n := len(db.serials(webID)); n != 1 {
			t.Errorf("%d certificates recorded, want only the one before the revocation", n)
		}

		// A revocation that lands while a certificate is being recorded
		// keeps that certificate from leaving.
		db.unrevoke(store.RevokeSPIFFEID, webID)
		if err := dl.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		db.onRecord = func() {
			db.revoke(store.RevokeSPIFFEID, webID, "dev")
			if err := dl.Refresh(context.Background()); err != nil {
				t.Error(err)
			}
		}
		if err := issue(); !errors.Is(err, issuer.ErrPermissionDenied) {
			t.Fatalf("revoked while recording: %v, want ErrPermissionDenied", err)
		}
		db.onRecord = nil

		time.Sleep(issuer.DefaultDenyMaxStale + time.Second) // no polling: the list goes stale
		if err := issue(); !errors.Is(err, issuer.ErrUnavailable) || !strings.Contains(err.Error(), "stale") {
			t.Fatalf("stale deny-list: %v, want ErrUnavailable", err)
		}
	})
}

// revokeIn records a revocation in a real store as the admin service does.
func revokeIn(t *testing.T, db *sqlite.Store, kind, value string) {
	t.Helper()
	_, err := db.Revoke(context.Background(), store.Revocation{Kind: kind, Value: value, Cluster: "dev", RevokedBy: "admin:test"},
		store.AuditEvent{Actor: "admin:test", Action: "revocation.revoke", Cluster: "dev", SPIFFEID: value})
	if err != nil {
		t.Fatal(err)
	}
}

func unrevokeIn(t *testing.T, db *sqlite.Store, kind, value string) {
	t.Helper()
	if err := db.Unrevoke(context.Background(), kind, value,
		store.AuditEvent{Actor: "admin:test", Action: "revocation.lift", Cluster: "dev", SPIFFEID: value}); err != nil {
		t.Fatal(err)
	}
}

// denyOver returns a wireOptions.deny that builds a deny-list over the
// wire's store, loaded once; now nil means time.Now.
func denyOver(t *testing.T, now func() time.Time) func(*sqlite.Store) issuer.DenyChecker {
	return func(db *sqlite.Store) issuer.DenyChecker {
		dl, err := issuer.NewDenyList(issuer.DenyListConfig{Store: db, Cluster: "dev", Now: now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := dl.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		return dl
	}
}

func TestGRPCRevokedIdentityRefused(t *testing.T) {
	w := newWireOptions(t, wireOptions{deny: denyOver(t, nil)})
	dl := w.denyList.(*issuer.DenyList)
	web := bearer(w.token(t, attest.TokenSpec{}))
	api := bearer(w.token(t, attest.TokenSpec{Namespace: "default", ServiceAccount: "api"}))
	csr := csrPEM(t, testKey(t, "p256"), nil)
	if _, err := w.call(t, web, csr, 0); err != nil {
		t.Fatal(err)
	}

	revokeIn(t, w.db, store.RevokeSPIFFEID, webID)
	if err := dl.Refresh(t.Context()); err != nil { // as the admin service does
		t.Fatal(err)
	}
	resp, err := w.call(t, web, csr, 0)
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied || resp != nil {
		t.Fatalf("revoked identity: code %v (%q), want PermissionDenied and no certificate", st.Code(), st.Message())
	}
	if want := webID + ": identity revoked"; !strings.Contains(st.Message(), want) {
		t.Errorf("message %q, want it to say %q", st.Message(), want)
	}
	if n := w.rows(t); n != 1 {
		t.Errorf("%d certificate rows, want only the one issued before the revocation", n)
	}
	if _, err := w.call(t, api, csr, 0); err != nil {
		t.Errorf("another identity is refused too: %v", err)
	}

	unrevokeIn(t, w.db, store.RevokeSPIFFEID, webID)
	if err := dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.call(t, web, csr, 0); err != nil {
		t.Fatalf("after the lift: %v", err)
	}
	if n := w.rows(t); n != 3 {
		t.Errorf("%d certificate rows, want 3", n)
	}
}

func TestGRPCStaleDenyListIsUnavailable(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	w := newWireOptions(t, wireOptions{now: clock.Now, deny: denyOver(t, clock.Now)})
	web := bearer(w.token(t, attest.TokenSpec{}))
	csr := csrPEM(t, testKey(t, "p256"), nil)
	if _, err := w.call(t, web, csr, 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(issuer.DefaultDenyMaxStale + time.Second) // nothing reloads it
	resp, err := w.call(t, web, csr, 0)
	if st := status.Convert(err); st.Code() != codes.Unavailable || resp != nil {
		t.Fatalf("stale deny-list: code %v (%q), want Unavailable and no certificate", st.Code(), st.Message())
	}
	if n := w.rows(t); n != 1 {
		t.Errorf("%d certificate rows, want 1", n)
	}
	if err := w.denyList.(*issuer.DenyList).Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.call(t, web, csr, 0); err != nil {
		t.Fatalf("after a reload: %v", err)
	}
}

// TestDenyListReplicasShareTheStore runs two issuer replicas over one
// SQLite database, each polling its own deny-list: a revocation made on one
// reaches the other within the poll interval.
func TestDenyListReplicasShareTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	synctest.Test(t, func(t *testing.T) {
		tree := testkit.New(t, testkit.Options{})
		type replica struct {
			db  *sqlite.Store
			dl  *issuer.DenyList
			iss *issuer.Issuer
		}
		replicas := make([]replica, 2)
		for i := range replicas {
			db, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			dl := newDenyList(t, db, slog.New(slog.DiscardHandler))
			runInBackground(t, "Run", dl.Run)
			iss := newDenyingIssuer(t, tree, db, dl)
			replicas[i] = replica{db: db, dl: dl, iss: iss}
		}
		synctest.Wait()
		issue := func(r replica) error {
			_, err := r.iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
			return err
		}
		for i, r := range replicas {
			if err := issue(r); err != nil {
				t.Fatalf("replica %d: %v", i, err)
			}
		}

		revokeIn(t, replicas[0].db, store.RevokeSPIFFEID, webID)
		if err := replicas[0].dl.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := issue(replicas[0]); !errors.Is(err, issuer.ErrPermissionDenied) {
			t.Fatalf("the replica that took the call: %v, want ErrPermissionDenied at once", err)
		}
		time.Sleep(issuer.DefaultDenyPollInterval)
		synctest.Wait()
		if err := issue(replicas[1]); !errors.Is(err, issuer.ErrPermissionDenied) {
			t.Fatalf("the other replica one poll interval later: %v, want ErrPermissionDenied", err)
		}

		unrevokeIn(t, replicas[0].db, store.RevokeSPIFFEID, webID)
		time.Sleep(issuer.DefaultDenyPollInterval)
		synctest.Wait()
		for i, r := range replicas {
			if err := issue(r); err != nil {
				t.Errorf("replica %d after the lift: %v", i, err)
			}
		}
		certs, err := replicas[1].db.Certificates(context.Background(), store.CertificateFilter{SPIFFEID: webID})
		if err != nil || len(certs) != 4 {
			t.Errorf("%d certificates recorded (%v), want 4: none for refused requests", len(certs), err)
		}
	})
}
