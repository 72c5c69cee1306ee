package k8s

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshca/meshca/internal/testkit"
)

// checkUpgrade runs `helm upgrade` with a changed pod annotation, which
// rolls the issuer replicas one by one (maxSurge 1, maxUnavailable 0),
// while the workloads renew their short-lived certificates and call each
// other: no renewal fails, every call succeeds, and each sidecar renews
// again from the new replicas afterwards.
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
	start := time.Now()
	issuer := r.values["issuer"].(map[string]any)
	issuer["podAnnotations"] = map[string]any{"meshca.test/rollout": "2"}
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
	// Each sidecar renews again, now from the new replicas alone (the
	// leaf TTL is short).
	for _, w := range ws {
		after := w.renewals(t)
		testkit.Eventually(t, 2*leafTTL, w.name+" renewed from the new replicas", func() error {
			if now := w.renewals(t); now.ok <= after.ok {
				return fmt.Errorf("renewals %+v, after the upgrade %+v", now, after)
			}
			return nil
		})
	}
	close(stop)
	<-done
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

// renewals are a sidecar's meshca_agent_renewals_total by result.
type renewals struct{ ok, failed int }

func (w *workload) renewals(t *testing.T) renewals {
	t.Helper()
	body, err := testkit.Get("http://127.0.0.1:" + strconv.Itoa(w.health) + "/metrics")
	if err != nil {
		t.Fatalf("%s: sidecar metrics: %v", w.name, err)
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
			t.Fatalf("%s: %q: %v", w.name, line, err)
		}
		switch {
		case strings.Contains(name, `result="ok"`):
			r.ok = int(n)
		case strings.Contains(name, `result="error"`):
			r.failed = int(n)
		}
	}
	return r
}

// issuerPods are the names of the release's issuer pods.
func (r *release) issuerPods(t *testing.T) map[string]bool {
	t.Helper()
	pods, err := r.n.Admin.CoreV1().Pods(r.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + releaseName + ",app.kubernetes.io/component=issuer"})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range pods.Items {
		names[p.Name] = true
	}
	return names
}
