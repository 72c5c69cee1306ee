package kube

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/rootcm"
	"github.com/meshca/meshca/test/kubetest"
	"github.com/meshca/meshca/trust"
)

// Election timing of the root ConfigMap tests: short, so that a takeover
// is quick, and loose enough for a busy machine.
const (
	rootcmLease = 4 * time.Second
	rootcmRenew = 3 * time.Second
	rootcmRetry = 500 * time.Millisecond
)

// TestRootConfigMaps runs two replicas of the root ConfigMap controller
// sharing one Lease on a real API server: only the leader writes; the
// ConfigMap appears in existing and new selected namespaces with every own
// root, edits are repaired, deletions recreated, a root rotation followed;
// when the leader is cut off from the API server the other takes over
// a lease duration after its last renewal and repairs again; a leader
// that stops releases the Lease to the other at once.
func TestRootConfigMaps(t *testing.T) {
	c := east(t)
	ctx := t.Context()
	sel := "meshca-rootcm=" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	label := map[string]string{"meshca-rootcm": strings.SplitN(sel, "=", 2)[1]}
	leaseNS := c.Namespace(t)
	ns1 := labelledNamespace(t, c, label)
	unselected := c.Namespace(t)

	now := time.Now()
	rootA := testkit.Root(t, "rootcm-kube-a", now, time.Hour).Certificate
	rootB := testkit.Root(t, "rootcm-kube-b", now.Add(time.Minute), time.Hour).Certificate
	src := newBundleSource(t, rootA, rootB)
	bothPEM := string(trust.EncodeCertificates(rootA, rootB))

	replicas := map[string]*rootcmReplica{}
	for _, id := range []string{"issuer-0", "issuer-1"} {
		r := &rootcmReplica{}
		ctl, err := rootcm.New(rootcm.Config{
			Client: r.client(t, c.AdminConfig), Selector: sel, LeaseNamespace: leaseNS, Identity: id,
			LeaseDuration: rootcmLease, RenewDeadline: rootcmRenew, RetryPeriod: rootcmRetry,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		r.stop = testkit.Go(t, "rootcm "+id, func(ctx context.Context) error { return ctl.Run(ctx, src) })
		replicas[id] = r
	}

	waitRootCM(t, c, ns1, bothPEM, "existing namespace")
	ns2 := labelledNamespace(t, c, label)
	waitRootCM(t, c, ns2, bothPEM, "new namespace")

	if cm, err := c.Admin.CoreV1().ConfigMaps(ns1).Get(ctx, rootcm.DefaultName, metav1.GetOptions{}); err != nil || len(cm.OwnerReferences) > 0 {
		t.Errorf("without an owner: ConfigMap %v, %v; want no owner references", cm, err)
	}
	editRootCM(t, c, ns1, "not a root")
	waitRootCM(t, c, ns1, bothPEM, "edit repaired")
	if err := c.Admin.CoreV1().ConfigMaps(ns2).Delete(ctx, rootcm.DefaultName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRootCM(t, c, ns2, bothPEM, "deletion recreated")

	src.set(rootB) // rotation done: the old root leaves the bundle
	onlyB := string(trust.EncodeCertificates(rootB))
	waitRootCM(t, c, ns1, onlyB, "rotation followed")
	waitRootCM(t, c, ns2, onlyB, "rotation followed")

	leaderID := leaseHolder(t, c, leaseNS)
	var followerID string
	for id := range replicas {
		if id != leaderID {
			followerID = id
		}
	}
	leader, follower := replicas[leaderID], replicas[followerID]
	if leader.writes.Load() == 0 || follower.writes.Load() != 0 {
		t.Fatalf("writes: leader %s %d, follower %s %d; want only the leader's", leaderID, leader.writes.Load(), followerID, follower.writes.Load())
	}
	if _, err := c.Admin.CoreV1().ConfigMaps(unselected).Get(ctx, rootcm.DefaultName, metav1.GetOptions{}); err == nil {
		t.Errorf("unselected namespace %s got the ConfigMap", unselected)
	}

	// The leader loses the API server (as a partitioned or hung replica
	// would: nothing is released); the follower must take over.
	leader.cut.Store(true)
	cutAt := time.Now()
	leaderWrites := leader.writes.Load()
	var lastRenew, acquired time.Time // the old leader's last renewal; the new leader's acquisition
	testkit.Eventually(t, rootcmLease+4*rootcmRetry+5*time.Second, "takeover", func() error {
		l := lease(t, c, leaseNS)
		if h := ptrOr(l.Spec.HolderIdentity); h != followerID {
			if h == leaderID && l.Spec.RenewTime != nil {
				lastRenew = l.Spec.RenewTime.Time
			}
			return fmt.Errorf("lease held by %q", h)
		}
		if l.Spec.AcquireTime != nil {
			acquired = l.Spec.AcquireTime.Time
		}
		return nil
	})
	took := time.Since(cutAt)
	gap := acquired.Sub(lastRenew)
	t.Logf("takeover %v after the leader was cut off, %v after its last renewal (lease duration %v, retry %v)", took, gap, rootcmLease, rootcmRetry)
	// The follower sees each renewal within a jittered retry period and
	// takes over a lease duration after it, at its next retry.
	if bound := rootcmLease + 3*rootcmRetry + 2*time.Second; lastRenew.IsZero() || acquired.IsZero() || gap > bound || gap < rootcmLease {
		t.Errorf("takeover %v after the last renewal (renewed %v, acquired %v), want within [%v, %v]", gap, lastRenew, acquired, rootcmLease, bound)
	}
	editRootCM(t, c, ns1, "edited again")
	waitRootCM(t, c, ns1, onlyB, "edit repaired by the new leader")
	if follower.writes.Load() == 0 {
		t.Error("the new leader wrote nothing")
	}
	if got := leader.writes.Load(); got != leaderWrites {
		t.Errorf("the cut-off leader wrote %d more times", got-leaderWrites)
	}

	// A leader that stops gracefully releases the Lease: the first replica,
	// reconnected, takes over at once instead of a lease duration later.
	leader.cut.Store(false)
	stoppedAt := time.Now()
	follower.stop()
	testkit.Eventually(t, rootcmLease+4*rootcmRetry+5*time.Second, "takeover after a release", func() error {
		if h := leaseHolder(t, c, leaseNS); h != leaderID {
			return fmt.Errorf("lease held by %q", h)
		}
		return nil
	})
	t.Logf("takeover %v after the leader stopped and released the Lease", time.Since(stoppedAt))
	editRootCM(t, c, ns2, "edited a third time")
	waitRootCM(t, c, ns2, onlyB, "edit repaired after the release")
}

// rootcmReplica is one replica's API client, with a count and the paths
// of its ConfigMap writes and a switch that cuts it off from the API
// server.
type rootcmReplica struct {
	writes atomic.Int64
	cut    atomic.Bool
	stop   func()
	mu     sync.Mutex
	paths  []string // METHOD path of every ConfigMap write
}

// written returns the METHOD path of every ConfigMap write so far.
func (r *rootcmReplica) written() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.paths)
}

func (r *rootcmReplica) client(tb testing.TB, admin *rest.Config) kubernetes.Interface {
	tb.Helper()
	cfg := rest.CopyConfig(admin)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if r.cut.Load() {
				return nil, errors.New("cut off from the API server")
			}
			if req.Method != http.MethodGet && strings.Contains(req.URL.Path, "/configmaps") {
				r.writes.Add(1)
				r.mu.Lock()
				r.paths = append(r.paths, req.Method+" "+req.URL.Path)
				r.mu.Unlock()
			}
			return rt.RoundTrip(req)
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return client
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func labelledNamespace(tb testing.TB, c *kubetest.Cluster, labels map[string]string) string {
	tb.Helper()
	ns, err := c.Admin.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "rootcm-", Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create namespace: %v", err)
	}
	return ns.Name
}

// waitRootCM waits until ns's root ConfigMap holds exactly wantPEM and is
// labelled as meshca's.
func waitRootCM(tb testing.TB, c *kubetest.Cluster, ns, wantPEM, what string) {
	tb.Helper()
	testkit.Eventually(tb, 30*time.Second, what+" ("+ns+")", func() error {
		cm, err := c.Admin.CoreV1().ConfigMaps(ns).Get(context.Background(), rootcm.DefaultName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := cm.Data[rootcm.DefaultKey]; got != wantPEM {
			return fmt.Errorf("%s holds %d bytes, want %d", rootcm.DefaultKey, len(got), len(wantPEM))
		}
		if cm.Labels[rootcm.ManagedByLabel] != rootcm.ManagedByValue {
			return fmt.Errorf("labels %v", cm.Labels)
		}
		return nil
	})
}

func editRootCM(tb testing.TB, c *kubetest.Cluster, ns, content string) {
	tb.Helper()
	ctx := context.Background()
	cm, err := c.Admin.CoreV1().ConfigMaps(ns).Get(ctx, rootcm.DefaultName, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	cm.Data[rootcm.DefaultKey] = content
	if _, err := c.Admin.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		tb.Fatal(err)
	}
}

func leaseHolder(tb testing.TB, c *kubetest.Cluster, ns string) string {
	tb.Helper()
	return ptrOr(lease(tb, c, ns).Spec.HolderIdentity)
}

// lease returns the election's Lease; empty while there is none.
func lease(tb testing.TB, c *kubetest.Cluster, ns string) *coordinationv1.Lease {
	tb.Helper()
	l, err := c.Admin.CoordinationV1().Leases(ns).Get(context.Background(), rootcm.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		return &coordinationv1.Lease{}
	}
	return l
}

func ptrOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// bundleSource is a settable rootcm.BundleSource of one own trust domain.
type bundleSource struct {
	tb      testing.TB
	mu      sync.Mutex
	cur     *trust.TrustBundle
	replace chan struct{}
}

func newBundleSource(tb testing.TB, roots ...*x509.Certificate) *bundleSource {
	s := &bundleSource{tb: tb}
	s.set(roots...)
	return s
}

func (s *bundleSource) set(roots ...*x509.Certificate) {
	b, err := trust.NewBundle(roots...)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = &trust.TrustBundle{Domains: []trust.DomainBundle{{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Roots: b}}}
	if s.replace != nil {
		close(s.replace)
	}
	s.replace = make(chan struct{})
}

func (s *bundleSource) Current() (*trust.TrustBundle, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.replace
}

// testWriter sends log lines to t.Log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
