package k8s

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshca/meshca/internal/testkit"
)

// deniedFor is how long a denied workload is watched: its sidecar must
// not start meanwhile (it retries the issuer every few seconds).
const deniedFor = 15 * time.Second

// checkDenied starts a workload of a service account the chart's policy
// denies: its sidecar never holds a certificate, so it never starts, and
// the app never runs.
func checkDenied(t *testing.T, r *release, ns string, peer *workload) {
	w := newWorkload(t, ns, "denied")
	w.start(t, r, peer)
	ctx := context.Background()
	deadline := time.Now().Add(deniedFor)
	var pod *corev1.Pod
	for time.Now().Before(deadline) {
		var err error
		if pod, err = r.n.Admin.CoreV1().Pods(ns).Get(ctx, w.name, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, cs := range pod.Status.InitContainerStatuses {
			if cs.Started != nil && *cs.Started {
				t.Fatalf("the sidecar of a denied service account started: %+v", cs)
			}
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Running != nil {
				t.Fatalf("the app of a denied service account runs")
			}
		}
		time.Sleep(time.Second)
	}
	if _, err := w.svid(); err == nil {
		t.Error("a denied workload serves an SVID")
	}
	logs, err := r.n.Admin.CoreV1().Pods(ns).GetLogs(w.name, &corev1.PodLogOptions{Container: "meshca-agent"}).DoRaw(ctx)
	if err != nil || !strings.Contains(string(logs), "certificate renewal refused by the issuer") ||
		!strings.Contains(string(logs), "code = Unauthenticated") {
		t.Errorf("the denied sidecar's log does not say the issuer refused it (%v):\n%s", err, logs)
	}
}

// checkKubeletRestart restarts the kubelet: the workloads' containers are
// not restarted and mutual TLS keeps working.
func checkKubeletRestart(t *testing.T, r *release, ws ...*workload) {
	before := map[string]string{}
	for _, w := range ws {
		for _, id := range containerIDs(t, r, w) {
			before[id] = w.name
		}
	}
	r.n.RestartKubelet(t)
	for _, w := range ws {
		r.n.WaitPodRunning(t, w.ns, w.name)
		for _, id := range containerIDs(t, r, w) {
			if before[id] == "" {
				t.Errorf("%s: container %s is new after the kubelet's restart", w.name, id)
			}
		}
	}
	checkMutualTLS(t, ws[0], ws[1])
}

// containerIDs are the IDs of w's sidecar and app containers.
func containerIDs(t *testing.T, r *release, w *workload) []string {
	t.Helper()
	pod, err := r.n.Admin.CoreV1().Pods(w.ns).Get(context.Background(), w.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, cs := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		if cs.RestartCount != 0 {
			t.Errorf("%s: container %s restarted %d times", w.name, cs.Name, cs.RestartCount)
		}
		ids = append(ids, cs.ContainerID)
	}
	return ids
}

// checkMutualTLS has a call b and b call a over mutual TLS.
func checkMutualTLS(t *testing.T, a, b *workload) {
	t.Helper()
	for _, c := range [][2]*workload{{a, b}, {b, a}} {
		from, to := c[0], c[1]
		got, err := testkit.Get("http://" + from.status + "/call")
		if want := fmt.Sprintf("hello %s from %s", from.id(), to.id()); err != nil || got != want {
			t.Errorf("%s calling %s over mutual TLS: %q, %v; want %q", from.name, to.name, got, err, want)
		}
	}
}
