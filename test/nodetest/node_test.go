package nodetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshca/meshca/internal/testkit"
)

// TestPodProjectedToken runs a real pod on a real kubelet: a locally built
// image, host network, a projected service-account token for audience
// meshca. The test reads the token the kubelet mounted through the pod's
// own server and has the API server review it: it names the pod. The pod
// keeps running through a kubelet restart. meshca-agent, built and packed
// as `make images` does, runs in a hardened pod. Once the node is torn
// down, nothing of it is left.
func TestPodProjectedToken(t *testing.T) {
	var n *Node
	t.Run("pod", func(t *testing.T) {
		n = Start(t)
		podProjectedToken(t, n)
		agentImageRuns(t, n)
	})
	if n != nil {
		checkTornDown(t, n)
	}
}

// checkTornDown fails t if anything of the stopped node n is left: its
// directory, a mount below it, a shim, a cgroup.
func checkTornDown(t *testing.T, n *Node) {
	if _, err := os.Stat(n.dir.root); !os.IsNotExist(err) {
		t.Errorf("node directory %s left: %v", n.dir.root, err)
	}
	mounts, err := mountPoints(func(point, _ string) bool { return strings.HasPrefix(point, n.dir.root+"/") })
	if err != nil || len(mounts) > 0 {
		t.Errorf("mounts left under %s: %q %v", n.dir.root, mounts, err)
	}
	hs, err := cgroupHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, n.cgroup)); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left in %s: %v", n.cgroup, h, err)
		}
	}
	if pids := shims(n.dir.containerdSock()); len(pids) > 0 {
		t.Errorf("shims left: %v", pids)
	}
}

func podProjectedToken(t *testing.T, n *Node) {
	ns := n.Namespace(t)
	const ref = "localhost/nodetest-tokenserver:test"
	n.BuildImage(t, "./testdata/tokenserver", ref)

	addr := testkit.FreeAddr(t)
	expiry := int64(600)
	nonRoot, uid := true, int64(65532)
	pod, err := n.Admin.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tokenserver"},
		Spec: corev1.PodSpec{
			HostNetwork: true,
			Containers: []corev1.Container{{
				Name: "app", Image: ref, ImagePullPolicy: corev1.PullNever,
				Args:         []string{"-listen", addr, "-token", "/var/run/secrets/meshca/token"},
				Env:          n.APIServerEnv(),
				VolumeMounts: []corev1.VolumeMount{{Name: "meshca-token", MountPath: "/var/run/secrets/meshca", ReadOnly: true}},
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot: &nonRoot, RunAsUser: &uid, ReadOnlyRootFilesystem: &nonRoot,
					AllowPrivilegeEscalation: new(bool),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
			Volumes: []corev1.Volume{{Name: "meshca-token", VolumeSource: corev1.VolumeSource{
				Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
					ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "meshca", ExpirationSeconds: &expiry, Path: "token"},
				}}},
			}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pod = n.WaitPodRunning(t, ns, pod.Name)
	t.Logf("pod running %.1fs after creation", time.Since(start).Seconds())

	var token string
	testkit.Eventually(t, 30*time.Second, "token served by the pod", func() error {
		var err error
		token, err = testkit.Get("http://" + addr + "/token")
		return err
	})

	review, err := n.Admin.AuthenticationV1().TokenReviews().Create(context.Background(), &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{"meshca"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := review.Status
	if !st.Authenticated {
		t.Fatalf("token from the pod not authenticated: %s", st.Error)
	}
	if want := "system:serviceaccount:" + ns + ":default"; st.User.Username != want {
		t.Errorf("username %q, want %q", st.User.Username, want)
	}
	if got := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != pod.Name {
		t.Errorf("pod-name %v, want %s", got, pod.Name)
	}
	if got := st.User.Extra["authentication.kubernetes.io/pod-uid"]; len(got) != 1 || got[0] != string(pod.UID) {
		t.Errorf("pod-uid %v, want %s", got, pod.UID)
	}
	if len(st.Audiences) != 1 || st.Audiences[0] != "meshca" {
		t.Errorf("audiences %v, want [meshca]", st.Audiences)
	}

	// The pod reaches the API server with its in-cluster configuration.
	if v, err := testkit.Get("http://" + addr + "/apiserver-version"); err != nil || !strings.Contains(v, `"gitVersion": "v1.37.2"`) {
		t.Errorf("API server version from inside the pod: %q, %v", v, err)
	}

	// The API server reads the container's log from the kubelet.
	logs, err := n.Admin.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil || !strings.Contains(string(logs), "tokenserver: serving") {
		t.Errorf("pod log through the API server: %q, %v", logs, err)
	}

	// A kubelet restart leaves the running container alone.
	before := pod.Status.ContainerStatuses[0].ContainerID
	n.RestartKubelet(t)
	if _, err := testkit.Get("http://" + addr + "/token"); err != nil {
		t.Errorf("pod not serving after the kubelet's restart: %v", err)
	}
	pod = n.WaitPodRunning(t, ns, pod.Name)
	if cs := pod.Status.ContainerStatuses[0]; cs.ContainerID != before || cs.RestartCount != 0 {
		t.Errorf("container %s (restarts %d) after the kubelet's restart, want %s not restarted", cs.ContainerID, cs.RestartCount, before)
	}
}

// agentImageRuns builds meshca-agent as `make images` does (static, the
// agent's build tags), packs it with tools/imagebuild, imports it and runs
// `meshca-agent version` in a pod with a read-only root filesystem, as a
// non-root user, without capabilities: the image's entrypoint is the
// binary and needs nothing else from the image.
func agentImageRuns(t *testing.T, n *Node) {
	bin := filepath.Join(t.TempDir(), "meshca-agent")
	cmd := testkit.GoCommand(context.Background(), "build", "-tags", "grpcnotrace,netgo",
		"-ldflags", "-X main.version=v9.9.9-node -s -w", "-o", bin, "../../cmd/meshca-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build meshca-agent: %v\n%s", err, out)
	}
	const ref = "localhost/meshca-agent:nodetest"
	n.ImportImage(t, n.PackImage(t, bin, ref))
	ns := n.Namespace(t)
	yes := true
	pod, err := n.Admin.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-version"},
		Spec: corev1.PodSpec{
			HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "agent", Image: ref, ImagePullPolicy: corev1.PullNever, Args: []string{"version"},
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot: &yes, ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: new(bool),
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, PodStartTimeout, "meshca-agent version pod succeeded", func() error {
		p, err := n.Admin.CoreV1().Pods(ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase == corev1.PodFailed {
			t.Fatalf("meshca-agent version pod failed: %s", podWaiting(p))
		}
		if p.Status.Phase != corev1.PodSucceeded {
			return fmt.Errorf("phase %s: %s", p.Status.Phase, podWaiting(p))
		}
		return nil
	})
	logs, err := n.Admin.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil || !strings.HasPrefix(string(logs), "meshca-agent v9.9.9-node ") {
		t.Errorf("meshca-agent version in the pod printed %q, %v", logs, err)
	}
}

// TestTwoNodes runs two nodes at once, as two test runs on one machine
// would, each with a pod: both become Ready and run their pods, and both
// teardowns, running at the same time, leave nothing behind.
func TestTwoNodes(t *testing.T) {
	nodes := make([]*Node, 2)
	t.Run("group", func(t *testing.T) {
		for i := range nodes {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				n := Start(t)
				nodes[i] = n
				ns := n.Namespace(t)
				_, err := n.Admin.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: "sandbox-only"},
					Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{
						Name: "pause", Image: n.bins.PauseRef, ImagePullPolicy: corev1.PullNever,
					}}},
				}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				n.WaitPodRunning(t, ns, "sandbox-only")
			})
		}
	})
	if nodes[0] != nil && nodes[1] != nil && nodes[0].dir.root == nodes[1].dir.root {
		t.Errorf("both nodes in %s", nodes[0].dir.root)
	}
	for _, n := range nodes {
		if n != nil {
			checkTornDown(t, n)
		}
	}
}
