package k8s

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshca/meshca/internal/testkit"
)

// Pacing of the upgrade: each new issuer replica must stay ready
// minReady (the chart's issuer.minReadySeconds) before an old one goes, so
// with two replicas rolled one at a time old and new replicas run side by
// side for more than 2×minReady. The workloads a and b renew their renewTTL
// leaves every 40 to 60% of their life, at most 0.6×renewTTL plus the
// issuance apart: each sidecar renews at least minSwitchRenewals times
// while the replica sets switch, however fast the machine is.
const (
	minReady          = 10 * time.Second
	minSwitchRenewals = 2
)

// checkUpgrade runs `helm upgrade` with a changed pod annotation, which
// rolls the issuer replicas one by one (maxSurge 1, maxUnavailable 0,
// minReadySeconds minReady), while the workloads renew their short-lived
// certificates and call each other. From the first new replica's creation
// to the last old replica's end (the switch), every sidecar renews at
// least minSwitchRenewals times, counted from its own metrics; no renewal
// fails, every call succeeds, and each sidecar renews again from the new
// replicas afterwards.
func checkUpgrade(t *testing.T, r *release, ws ...*workload) {
	before := map[*workload]renewals{}
	for _, w := range ws {
		before[w] = w.renewals(t)
	}
	oldPods := r.issuerPods(t)

	var calls, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			for _, w := range ws {
				calls.Add(1)
				if _, err := testkit.Get("http://" + w.status + "/call"); err != nil {
					failed.Add(1)
					t.Logf("%s: call during the upgrade failed: %v", w.name, err)
				}
			}
		}
	}()
	var halted sync.Once
	halt := func() { halted.Do(func() { close(stop); <-done }) }
	defer halt() // also when a check below ends the test early
	rollout := watchRollout(r, oldPods, ws)
	start := time.Now()
	issuer := r.values["issuer"].(map[string]any)
	issuer["podAnnotations"] = map[string]any{"meshca.test/rollout": "2"}
	issuer["minReadySeconds"] = int(minReady / time.Second)
	r.helm(t, "upgrade", releaseName, chartDir(), "--wait", "--timeout", "3m")
	t.Logf("helm upgrade rolled the issuer in %.1fs", time.Since(start).Seconds())

	testkit.Eventually(t, time.Minute, "the old issuer pods gone", func() error {
		for p := range r.issuerPods(t) {
			if oldPods[p] {
				return fmt.Errorf("%s still there", p)
			}
		}
		return nil
	})
	switched := rollout.stop(t)
	t.Logf("old and new issuer replicas side by side for %.1fs", switched.end.Sub(switched.start).Seconds())
	if d := switched.end.Sub(switched.start); d < 2*minReady {
		t.Errorf("the replica sets switched in %v, less than 2×minReadySeconds (%v): the rollout was not paced", d, 2*minReady)
	}
	for _, w := range ws {
		in := switched.renewed[w]
		t.Logf("%s: %d renewals while the replica sets switched", w.name, in)
		if in < minSwitchRenewals {
			t.Errorf("%s: %d renewals while the replica sets switched, want at least %d", w.name, in, minSwitchRenewals)
		}
	}
	// Each sidecar renews again, now from the new replicas alone.
	for _, w := range ws {
		after := w.renewals(t)
		testkit.Eventually(t, 2*leafTTL, w.name+" renewed from the new replicas", func() error {
			if now := w.renewals(t); now.ok <= after.ok {
				return fmt.Errorf("renewals %+v, after the upgrade %+v", now, after)
			}
			return nil
		})
	}
	halt()
	for _, w := range ws {
		now := w.renewals(t)
		t.Logf("%s: renewals %+v before, %+v after", w.name, before[w], now)
		if now.failed != before[w].failed {
			t.Errorf("%s: %d renewals failed during the upgrade", w.name, now.failed-before[w].failed)
		}
	}
	if failed.Load() > 0 || calls.Load() == 0 {
		t.Errorf("%d of %d mutual TLS calls failed during the upgrade", failed.Load(), calls.Load())
	}
}

// rolloutWatch samples, every samplePeriod, which issuer pods exist and
// each sidecar's renewal count, to find the switch: from the first sample
// with a new replica to the first after it without an old one.
type rolloutWatch struct {
	stopped chan struct{}
	done    chan struct{}
	// ended is closed by the sampler when it has seen the switch's end.
	ended chan struct{}
	// Written by the sampler until done.
	start, end  time.Time
	atStart     map[*workload]renewals
	atEnd       map[*workload]renewals
	errs        []error
	sawOld      bool
	sampleCount int
}

// samplePeriod is the rollout watch's period: well below a renewal's
// interval (renewTTL×0.4) and a replica's life.
const samplePeriod = 200 * time.Millisecond

// switchResult is the switch's span and each sidecar's renewals in it.
type switchResult struct {
	start, end time.Time
	renewed    map[*workload]int
}

func watchRollout(r *release, oldPods map[string]bool, ws []*workload) *rolloutWatch {
	rw := &rolloutWatch{stopped: make(chan struct{}), done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(rw.done)
		for {
			select {
			case <-rw.stopped:
				return
			case <-rw.ended:
				return
			case <-time.After(samplePeriod):
			}
			if err := rw.sample(r, oldPods, ws); err != nil {
				rw.errs = append(rw.errs, err)
			}
		}
	}()
	return rw
}

// sample takes one sample and moves the switch's ends.
func (rw *rolloutWatch) sample(r *release, oldPods map[string]bool, ws []*workload) error {
	if !rw.end.IsZero() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := r.n.Admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: issuerPodSelector})
	if err != nil {
		return err
	}
	counts := map[*workload]renewals{}
	for _, w := range ws {
		if counts[w], err = w.readRenewals(); err != nil {
			return err
		}
	}
	now := time.Now()
	rw.sampleCount++
	old, fresh := 0, 0
	for _, p := range pods.Items {
		if oldPods[p.Name] {
			old++
		} else {
			fresh++
		}
	}
	switch {
	case rw.start.IsZero() && fresh > 0:
		rw.start, rw.atStart, rw.sawOld = now, counts, old > 0
	case !rw.start.IsZero() && old == 0:
		rw.end, rw.atEnd = now, counts
		close(rw.ended)
	}
	return nil
}

// switchEndWait bounds how long stop waits for the sampler to see the
// switch's end: old replicas that Kubernetes has stopped listing as the
// Deployment's may still be terminating, and the switch lasts until they
// are gone.
const switchEndWait = 90 * time.Second

// stop waits for the sampler to see the switch's end (at most
// switchEndWait), ends the watch and returns the switch; it fails t when
// the switch was not seen whole.
func (rw *rolloutWatch) stop(t *testing.T) switchResult {
	t.Helper()
	select {
	case <-rw.ended:
	case <-time.After(switchEndWait):
	}
	close(rw.stopped)
	<-rw.done
	// A sample that failed is skipped: the next one moves the switch's
	// ends a period later.
	for _, err := range rw.errs {
		t.Logf("rollout watch: sample skipped: %v", err)
	}
	if rw.start.IsZero() || rw.end.IsZero() || !rw.sawOld {
		t.Fatalf("the switch was not seen in %d samples: start %v (old replicas then: %v), end %v", rw.sampleCount, rw.start, rw.sawOld, rw.end)
	}
	res := switchResult{start: rw.start, end: rw.end, renewed: map[*workload]int{}}
	for w, n := range rw.atEnd {
		res.renewed[w] = n.ok - rw.atStart[w].ok
	}
	return res
}

// renewals are a sidecar's meshca_agent_renewals_total by result.
type renewals struct{ ok, failed int }

func (w *workload) renewals(t *testing.T) renewals {
	t.Helper()
	r, err := w.readRenewals()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readRenewals reads w's renewal counts from its sidecar's metrics.
func (w *workload) readRenewals() (renewals, error) {
	body, err := testkit.Get("http://127.0.0.1:" + strconv.Itoa(w.health) + "/metrics")
	if err != nil {
		return renewals{}, fmt.Errorf("%s: sidecar metrics: %w", w.name, err)
	}
	var r renewals
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "meshca_agent_renewals_total{") {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return renewals{}, fmt.Errorf("%s: %q: %w", w.name, line, err)
		}
		switch {
		case strings.Contains(name, `result="ok"`):
			r.ok = int(n)
		case strings.Contains(name, `result="error"`):
			r.failed = int(n)
		}
	}
	return r, nil
}

// issuerPodSelector selects the release's issuer pods.
const issuerPodSelector = "app.kubernetes.io/instance=" + releaseName + ",app.kubernetes.io/component=issuer"

// issuerPods are the names of the release's issuer pods.
func (r *release) issuerPods(t *testing.T) map[string]bool {
	t.Helper()
	pods, err := r.n.Admin.CoreV1().Pods(r.ns).List(context.Background(), metav1.ListOptions{LabelSelector: issuerPodSelector})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range pods.Items {
		names[p.Name] = true
	}
	return names
}
