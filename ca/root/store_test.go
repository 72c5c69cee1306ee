package root

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

// openSQLite opens a fresh embedded store in a temporary directory on
// clock now, closed when the test ends.
func openSQLite(t testing.TB, now func() time.Time) *sqlite.Store {
	t.Helper()
	db, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "root.db"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// events are the audit events recorded with action, oldest first.
func (h *harness) events(action string) []store.AuditEvent {
	h.t.Helper()
	all, err := h.db.AuditEvents(context.Background(), time.Time{})
	if err != nil {
		h.t.Fatal(err)
	}
	return slices.DeleteFunc(all, func(ev store.AuditEvent) bool { return ev.Action != action })
}

func (h *harness) auditCount() int {
	h.t.Helper()
	all, err := h.db.AuditEvents(context.Background(), time.Time{})
	if err != nil {
		h.t.Fatal(err)
	}
	return len(all)
}

// allIntermediates are every recorded intermediate, of every cluster.
func (h *harness) allIntermediates() []store.Intermediate {
	h.t.Helper()
	ins, err := h.db.Intermediates(context.Background(), store.IntermediateFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	return ins
}

func (h *harness) intermediateCount() int { return len(h.allIntermediates()) }

var errStoreDown = errors.New("store down")

// downRoots is the real store whose Roots fails: what New reads first.
type downRoots struct{ *sqlite.Store }

func (downRoots) Roots(context.Context) ([]store.Root, error) { return nil, errStoreDown }

// downRedeem is the real store whose RedeemJoinToken fails while down is set.
type downRedeem struct {
	*sqlite.Store
	down *atomic.Bool
}

func (s downRedeem) RedeemJoinToken(ctx context.Context, hash string, now time.Time, ev store.AuditEvent) (store.Cluster, int, error) {
	if s.down.Load() {
		return store.Cluster{}, 0, errStoreDown
	}
	return s.Store.RedeemJoinToken(ctx, hash, now, ev)
}

// downRevocations is the real store whose Revocations fails while down is
// set: the read that keeps the deny-list fresh.
type downRevocations struct {
	*sqlite.Store
	down *atomic.Bool
}

func (s downRevocations) Revocations(ctx context.Context, now time.Time) ([]store.Revocation, error) {
	if s.down.Load() {
		return nil, errStoreDown
	}
	return s.Store.Revocations(ctx, now)
}

// sec is t as the stores keep it: UTC, to the second.
func sec(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

// storeOnly is a store reduced to the Store contract, without the optional
// capabilities (ClusterLister, ReplicaStore, AuditVerifier) both backends
// may have.
type storeOnly struct{ Store }
