// Package nodetest runs a real single-node Kubernetes cluster for tests:
// etcd and kube-apiserver (test/kubetest), kube-controller-manager,
// kube-scheduler, containerd with runc, and a kubelet, all on 127.0.0.1,
// built by the test bed (test/testbed/node.mk). Pods run for real: the
// kubelet mounts projected service-account tokens it requests from the API
// server. Pods use the host's network (hostNetwork: true; there is no CNI
// plugin and no kube-proxy) and locally imported images (ImportImage,
// PackImage; imagePullPolicy: Never), as no registry can be reached.
//
// Every node keeps its files, sockets, ports and cgroups apart from any
// other node's, so two test runs do not collide, and its clean-up stops the
// processes, kills the containers and their shims, unmounts what the
// kubelet and containerd mounted and removes the cgroups, also when the
// test failed; the next Start sweeps what a killed test left. Two host
// paths are shared, as the kubelet fixes them: /var/log/containers (links
// named after each container) and /var/lib/kubelet/device-plugins (a
// registration socket the last kubelet started owns; no device plugins run
// here). It needs root. It is test support only; production code never
// imports it.
package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/kubetest"
)

// NodeName is the node's name. The kubelet refuses a loopback node IP, so
// the API server reaches it by this host name (which resolves to
// 127.0.0.1), and its serving certificate is for it.
const NodeName = "localhost"

// Time bounds. The machine running tests may be busy; these are limits,
// not expectations.
const (
	containerdReadyTimeout = 60 * time.Second
	nodeReadyTimeout       = 3 * time.Minute
	// PodStartTimeout bounds how long a pod may take to run.
	PodStartTimeout = 2 * time.Minute
)

// Node is a running single-node cluster.
type Node struct {
	*kubetest.Cluster
	// ReadyAfter is how long the node took from Start until Ready, and
	// KubeletReadyAfter from the kubelet's start until Ready.
	ReadyAfter, KubeletReadyAfter time.Duration

	bins   Binaries
	dir    layout
	cgroup string // cgroup root, below every hierarchy
	// kubelet is the running kubelet and kubeletArgs its command line;
	// startTB is Start's tb, whose cleanup stops a restarted kubelet.
	kubelet     *harness.Proc
	kubeletArgs []string
	startTB     testing.TB
}

// Start starts a node for tb and tears it down in tb.Cleanup.
func Start(tb testing.TB) *Node {
	tb.Helper()
	bins := FindBinaries(tb)
	if err := sweepStale(bins.Runc); err != nil {
		tb.Logf("remains of an earlier test node: %v", err)
	}
	t0 := time.Now()
	cluster := kubetest.Start(tb, kubetest.Options{Name: "node", APIServerArgs: []string{
		// The kubelet reads its pods' secrets and requests their tokens:
		// the Node authorizer and NodeRestriction allow that and no more.
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--kubelet-preferred-address-types=Hostname,InternalIP",
	}})
	root, err := os.MkdirTemp("", "meshca-node-")
	if err != nil {
		tb.Fatal(err)
	}
	n := &Node{Cluster: cluster, bins: bins, dir: layout{root: root}, startTB: tb}
	n.cgroup = cgroupName(root)
	// Registered before any process starts, so that it runs after they are
	// all stopped (cleanups run last-in first-out).
	tb.Cleanup(func() {
		if err := n.teardown(); err != nil {
			tb.Errorf("node teardown: %v", err)
		}
	})
	n.startContainerd(tb)
	n.ImportImage(tb, bins.PauseImage)
	n.startControlPlane(tb)
	t1 := time.Now()
	n.startKubelet(tb)
	n.waitReady(tb)
	n.ReadyAfter, n.KubeletReadyAfter = time.Since(t0), time.Since(t1)
	tb.Logf("node %s ready %.1fs after start (%.1fs after the kubelet's)", NodeName,
		n.ReadyAfter.Seconds(), n.KubeletReadyAfter.Seconds())
	return n
}

func (n *Node) startContainerd(tb testing.TB) {
	tb.Helper()
	if dropIns, _ := filepath.Glob(hostContainerdDropIns); len(dropIns) > 0 {
		tb.Fatalf("containerd would read this host's %v into the test node's configuration", dropIns)
	}
	l := n.dir
	err := writeFiles(map[string][]byte{
		l.path("containerd.toml"):                   []byte(containerdConfig(l, n.bins.Shim, n.bins.Runc, n.bins.PauseRef)),
		l.path("cni", "conf", "10-meshca.conflist"): []byte(cniConfig),
	})
	if err == nil {
		err = mkdirs(l.path("cni", "bin"), l.path("cdi"), l.path("containerd", "tmp"), l.path("s"))
	}
	if err != nil {
		tb.Fatal(err)
	}
	p := harness.Start(tb, n.bins.Containerd, "containerd", "--config", l.path("containerd.toml"), "--log-level", "warn")
	testkit.Eventually(tb, containerdReadyTimeout, "containerd serving", func() error {
		select {
		case <-p.Done():
			tb.Fatalf("containerd exited: %v\n%s", p.Err(), p.Output())
		default:
		}
		_, err := n.ctr("version")
		return err
	})
}

// ctr runs ctr against the node's containerd in the k8s.io namespace (the
// CRI's) and returns its output.
func (n *Node) ctr(args ...string) (string, error) {
	return harness.Run(n.bins.Ctr, append([]string{"--address", n.dir.containerdSock(), "--namespace", "k8s.io"}, args...)...)
}

// ImportImage imports the OCI archive at path into the node's image store.
// Pods use it by its name (ImageRef) with imagePullPolicy: Never.
func (n *Node) ImportImage(tb testing.TB, path string) {
	tb.Helper()
	if out, err := n.ctr("images", "import", "--platform", "linux/amd64", path); err != nil {
		tb.Fatalf("import image %s: %v\n%s", path, err, out)
	}
}

// startControlPlane starts kube-controller-manager (service-account tokens
// per controller, the "default" ServiceAccount and kube-root-ca.crt in
// every namespace, Deployments, garbage collection) and kube-scheduler.
// Neither serves HTTPS (--secure-port=0), so nothing listens on a fixed
// port.
func (n *Node) startControlPlane(tb testing.TB) {
	tb.Helper()
	cm := n.kubeconfig(tb, "controller-manager", "system:kube-controller-manager")
	harness.Start(tb, n.bins.ControllerManager, "kube-controller-manager",
		"--kubeconfig="+cm, "--leader-elect=false", "--secure-port=0",
		"--use-service-account-credentials=true", "--root-ca-file="+n.CAFile(), "--v=1")
	sched := n.kubeconfig(tb, "scheduler", "system:kube-scheduler")
	harness.Start(tb, n.bins.Scheduler, "kube-scheduler",
		"--kubeconfig="+sched, "--leader-elect=false", "--secure-port=0", "--v=1")
}

// kubeconfig writes a kubeconfig for user (client certificate of the
// cluster CA) and returns its path.
func (n *Node) kubeconfig(tb testing.TB, name, user string, groups ...string) string {
	tb.Helper()
	cert, key, err := n.ClientCert(user, groups...)
	if err != nil {
		tb.Fatal(err)
	}
	path := n.dir.path(name + ".kubeconfig")
	if err := n.WriteCertKubeconfig(path, cert, key); err != nil {
		tb.Fatal(err)
	}
	return path
}

func (n *Node) startKubelet(tb testing.TB) {
	tb.Helper()
	l := n.dir
	kc := n.kubeconfig(tb, "kubelet", "system:node:"+NodeName, "system:nodes")
	cert, key, err := n.ServingCert(NodeName, []string{NodeName}, localhostIPs)
	if err != nil {
		tb.Fatal(err)
	}
	if err := n.makeCgroups(); err != nil {
		tb.Fatal(err)
	}
	certFile, keyFile := l.path("kubelet-serving.pem"), l.path("kubelet-serving-key.pem")
	cfg, err := kubeletConfig(l, testkit.FreePort(tb), n.CAFile(), certFile, keyFile, "/"+n.cgroup)
	if err != nil {
		tb.Fatal(err)
	}
	if err := writeFiles(map[string][]byte{
		certFile: cert, keyFile: key, l.path("kubelet.yaml"): cfg,
	}); err != nil {
		tb.Fatal(err)
	}
	if err := mkdirs(l.podLogs()); err != nil {
		tb.Fatal(err)
	}
	n.kubeletArgs = []string{
		"--config=" + l.path("kubelet.yaml"), "--kubeconfig=" + kc, "--root-dir=" + l.kubeletRoot(),
		"--hostname-override=" + NodeName, "--v=1",
	}
	n.kubelet = harness.Start(tb, n.bins.Kubelet, "kubelet", n.kubeletArgs...)
}

// RestartKubelet stops the kubelet (SIGTERM) and starts it again with the
// same configuration, as after a kubelet crash or upgrade, and returns once
// the new kubelet has reported the node Ready. Pods keep running meanwhile:
// their containers belong to containerd.
func (n *Node) RestartKubelet(tb testing.TB) {
	tb.Helper()
	if err := n.kubelet.Stop(tb); err != nil {
		tb.Logf("kubelet stopped: %v", err)
	}
	restarted := time.Now()
	n.kubelet = harness.Start(n.startTB, n.bins.Kubelet, "kubelet", n.kubeletArgs...)
	n.waitHeartbeat(tb, restarted)
}

func (n *Node) waitReady(tb testing.TB) {
	tb.Helper()
	n.waitHeartbeat(tb, time.Time{})
}

// waitHeartbeat waits until the node is Ready by a status the kubelet
// posted after since (status times have whole seconds).
func (n *Node) waitHeartbeat(tb testing.TB, since time.Time) {
	tb.Helper()
	since = since.Truncate(time.Second)
	testkit.Eventually(tb, nodeReadyTimeout, "node "+NodeName+" Ready", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		node, err := n.Admin.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type != corev1.NodeReady {
				continue
			}
			if c.Status != corev1.ConditionTrue {
				return fmt.Errorf("%s: %s", c.Reason, c.Message)
			}
			if !c.LastHeartbeatTime.After(since) {
				return fmt.Errorf("no status from the kubelet since %s", since.Format(time.RFC3339))
			}
			return nil
		}
		return errors.New("no Ready condition yet")
	})
}

// Namespace creates a namespace with a fresh random name and waits until
// the controller manager has given it its "default" ServiceAccount and the
// kube-root-ca.crt ConfigMap, without which no pod starts.
func (n *Node) Namespace(tb testing.TB) string {
	tb.Helper()
	ns := n.Cluster.Namespace(tb)
	testkit.Eventually(tb, time.Minute, "namespace "+ns+" set up", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := n.Admin.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := n.Admin.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err
	})
	return ns
}

// APIServerEnv is what a pod's containers need to reach the API server
// with their in-cluster configuration: the Service address Kubernetes
// injects (the first address of 10.96.0.0/16) is not routed here, as no
// kube-proxy runs, so host-network pods go to 127.0.0.1 directly. The
// serving certificate is valid for 127.0.0.1.
func (n *Node) APIServerEnv() []corev1.EnvVar {
	u, err := url.Parse(n.URL)
	if err != nil {
		panic("nodetest: API server URL " + n.URL + ": " + err.Error())
	}
	return []corev1.EnvVar{
		{Name: "KUBERNETES_SERVICE_HOST", Value: u.Hostname()},
		{Name: "KUBERNETES_SERVICE_PORT", Value: u.Port()},
	}
}

// WaitPodRunning waits until pod ns/name runs (phase Running, every
// container started) and returns it. It fails the test at once if the pod
// fails, with the pod's status.
func (n *Node) WaitPodRunning(tb testing.TB, ns, name string) *corev1.Pod {
	tb.Helper()
	var pod *corev1.Pod
	testkit.Eventually(tb, PodStartTimeout, "pod "+ns+"/"+name+" running", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if pod, err = n.Admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			tb.Fatalf("pod %s/%s ended: %s %s", ns, name, pod.Status.Phase, pod.Status.Message)
		}
		if pod.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s: %s", pod.Status.Phase, podWaiting(pod))
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Running == nil {
				return fmt.Errorf("container %s not running: %s", cs.Name, podWaiting(pod))
			}
		}
		return nil
	})
	return pod
}

// podWaiting says why a pod's containers wait, for failure messages.
func podWaiting(pod *corev1.Pod) string {
	s := ""
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s += string(c.Type) + ": " + c.Message + "; "
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			s += cs.Name + ": " + w.Reason + " " + w.Message + "; "
		}
		if t := cs.LastTerminationState.Terminated; t != nil {
			s += cs.Name + " last exit " + strconv.Itoa(int(t.ExitCode)) + " " + t.Reason + "; "
		}
	}
	return s
}
