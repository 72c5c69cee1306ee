package k8s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/meshca/meshca/internal/testkit"
)

// refusedWithin bounds how long after a revocation the revoked workload's
// sidecar is refused: it renews at once when its trust bundle watch brings
// a CRL of its issuer that lists it, else at its next renewal, within a
// leaf's life.
const refusedWithin = leafTTL + 30*time.Second

// crlWithin bounds how long a revocation takes to reach a peer as a CRL:
// the issuers' CRL refresh and store poll (about a second each), the
// sidecar's bundle watch and the Workload API stream; well inside the
// revoked certificate's remaining life (leafTTL, renewed at half of it).
const crlWithin = leafTTL / 2

// checkRevoke starts a pair of workloads talking mutual TLS, revokes one
// identity as an operator does (`meshca admin revoke` on an issuer's admin
// socket, through the API server's exec subresource), and checks that the
// issuer refuses the revoked workload's next renewal and its pod's token,
// and that a and b keep talking.
func checkRevoke(t *testing.T, r *release, ns string, a, b *workload) {
	revoked, peer := newWorkload(t, ns, "revoked"), newWorkload(t, ns, "revoked-peer")
	revoked.start(t, r, peer)
	peer.start(t, r, revoked)
	for _, w := range []*workload{revoked, peer} {
		r.n.WaitPodRunning(t, ns, w.name)
		testkit.Eventually(t, svidWithin, w.name+" holds an SVID", func() error {
			_, err := w.svid()
			return err
		})
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, w := range []*workload{revoked, peer} {
				for _, c := range []string{"meshca-agent", "app"} {
					logs, err := r.n.Admin.CoreV1().Pods(ns).GetLogs(w.name, &corev1.PodLogOptions{Container: c}).DoRaw(context.Background())
					t.Logf("--- %s/%s log (%v) ---\n%s", w.name, c, err, logs)
				}
			}
		}
	})
	checkMutualTLS(t, revoked, peer)
	if t.Failed() {
		t.FailNow()
	}
	token, err := testkit.Get("http://" + revoked.status + "/token")
	if err != nil {
		t.Fatal(err)
	}

	out, err := r.admin(t, "revoke", "--spiffe-id", revoked.id(), "--reason", "key compromise drill")
	if err != nil {
		t.Fatalf("meshca admin revoke: %v", err)
	}
	t.Logf("meshca admin revoke:\n%s", out)

	// The peer refuses the revoked workload's still valid certificate: the
	// CRL of the intermediate that signed it reaches the peer's sidecar
	// whichever replica it watches (the replicas share their CRLs through
	// the store), and the app checks the peer's chain against it. The
	// message is the app's CRL check, not an expiry.
	testkit.Eventually(t, crlWithin, peer.name+" refusing "+revoked.name, func() error {
		_, err := testkit.Get("http://" + peer.status + "/call")
		if err == nil {
			return errors.New("the call to the revoked workload still succeeds")
		}
		if !strings.Contains(err.Error(), "is revoked") {
			return fmt.Errorf("the call fails, but not for the revocation: %w", err)
		}
		return nil
	})

	// The issuer refuses the revoked identity (its deny-list is shared by
	// the replicas through the database): the sidecar's next renewal and any
	// request with its pod's token.
	testkit.Eventually(t, refusedWithin, revoked.name+"'s renewal refused", func() error {
		logs, err := r.n.Admin.CoreV1().Pods(ns).GetLogs(revoked.name, &corev1.PodLogOptions{Container: "meshca-agent"}).
			DoRaw(context.Background())
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(logs), "\n") {
			if strings.Contains(l, "certificate renewal refused by the issuer") &&
				strings.Contains(l, "code = PermissionDenied") && strings.Contains(l, "identity revoked") {
				return nil
			}
		}
		return errors.New("no renewal refused for the revoked identity in the sidecar's log")
	})
	// Every replica refuses it once its deny-list has reloaded from the
	// shared database (the revocation poll interval, a second by default);
	// the Service may route this request to the replica that did not take
	// the admin call.
	client := r.issuerClient(t)
	testkit.Eventually(t, 10*time.Second, "a certificate for the revoked identity refused", func() error {
		if err := issue(client, token); status.Code(err) != codes.PermissionDenied {
			return fmt.Errorf("a certificate for the revoked identity: %v, want PermissionDenied", err)
		}
		return nil
	})
	checkMutualTLS(t, a, b)
	for _, w := range []*workload{revoked, peer} {
		if err := r.n.Admin.CoreV1().Pods(ns).Delete(context.Background(), w.name, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	}
}

// admin runs `meshca admin ARGS` in an issuer pod against its admin
// socket, through the API server's exec subresource as `kubectl exec`
// does (the image has no shell: the binary is run directly). It returns
// the command's output.
func (r *release) admin(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx := context.Background()
	pods, err := r.n.Admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=issuer"})
	if err != nil {
		t.Fatal(err)
	}
	pod := ""
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			pod = p.Name
			break
		}
	}
	if pod == "" {
		t.Fatalf("no running issuer pod among %d", len(pods.Items))
	}
	argv := append([]string{"/meshca", "admin", "--socket", "/var/lib/meshca/admin.sock"}, args...)
	req := r.n.Admin.CoreV1().RESTClient().Post().Resource("pods").Namespace(r.ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "issuer", Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(r.n.AdminConfig, http.MethodGet, req.URL().String())
	if err != nil {
		t.Fatal(err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(r.n.AdminConfig, http.MethodPost, req.URL())
	if err != nil {
		t.Fatal(err)
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		return stdout.String(), fmt.Errorf("exec in %s: %w: %s", pod, err, stderr.String())
	}
	return stdout.String() + stderr.String(), nil
}
