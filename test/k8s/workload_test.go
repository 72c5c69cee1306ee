package k8s

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshca/meshca/internal/testkit"
)

// workload is a pod of mtlsapp with the meshca-agent native sidecar.
type workload struct {
	ns, name, sa string
	// listen is its mutual TLS address, status the test's plain HTTP one,
	// health the agent's.
	listen, status string
	health         int
	created        time.Time
	// ttl is the certificate lifetime the sidecar requests; zero: the
	// issuer's default.
	ttl time.Duration
}

func (w *workload) id() string { return "spiffe://" + trustDomain + "/ns/" + w.ns + "/sa/" + w.sa }

// newWorkload picks the ports of a workload pod named and running as
// service account name in ns.
func newWorkload(t *testing.T, ns, name string) *workload {
	return &workload{ns: ns, name: name, sa: name, listen: testkit.FreeAddr(t), status: testkit.FreeAddr(t), health: testkit.FreePort(t)}
}

// start creates w's service account and pod, the app calling peer. The pod
// is the sidecar snippet the chart's NOTES.txt prints, with the host
// network's addresses: the issuer on the node (no Service proxy) and
// ports of w's own, as every pod shares the node's.
func (w *workload) start(t *testing.T, r *release, peer *workload) {
	t.Helper()
	r.n.ServiceAccount(t, w.ns, w.sa)
	yes, uid, expiry := true, int64(65532), int64(3600)
	hardened := &corev1.SecurityContext{
		RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid, ReadOnlyRootFilesystem: &yes,
		AllowPrivilegeEscalation: new(bool),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	always := corev1.ContainerRestartPolicyAlways
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt(w.health)}},
			PeriodSeconds: 1, FailureThreshold: 60}
	}
	args := []string{
		"--issuer=" + r.issuerAddr, "--server-name=" + r.serverName, "--cluster-id=" + chartCluster,
		"--ca-bundle=/var/run/meshca/root/root-cert.pem",
		"--token-file=/var/run/meshca/token/token",
		"--workload-socket=/var/run/meshca/sockets/agent.sock",
		"--health-addr=:" + strconv.Itoa(w.health),
	}
	if w.ttl > 0 {
		args = append(args, "--ttl="+w.ttl.String())
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: w.name},
		Spec: corev1.PodSpec{
			HostNetwork: true, ServiceAccountName: w.sa, AutomountServiceAccountToken: new(bool),
			InitContainers: []corev1.Container{{
				Name: "meshca-agent", Image: agentImage + ":" + imageTag, ImagePullPolicy: corev1.PullNever,
				RestartPolicy: &always,
				Args:          args,
				StartupProbe:  probe("/readyz"), LivenessProbe: probe("/healthz"),
				SecurityContext: hardened,
				VolumeMounts: []corev1.VolumeMount{
					{Name: "meshca-token", MountPath: "/var/run/meshca/token", ReadOnly: true},
					{Name: "meshca-root", MountPath: "/var/run/meshca/root", ReadOnly: true},
					{Name: "meshca-sockets", MountPath: "/var/run/meshca/sockets"},
				},
			}},
			Containers: []corev1.Container{{
				Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"-listen", w.listen, "-status", w.status, "-peer", peer.listen, "-peer-id", peer.id(),
					"-token-file", "/var/run/meshca/token/token"},
				Env:             []corev1.EnvVar{{Name: "SPIFFE_ENDPOINT_SOCKET", Value: "unix:///var/run/meshca/sockets/agent.sock"}},
				SecurityContext: hardened,
				VolumeMounts: []corev1.VolumeMount{
					{Name: "meshca-sockets", MountPath: "/var/run/meshca/sockets", ReadOnly: true},
					// For the test only: the app serves the token on /token.
					{Name: "meshca-token", MountPath: "/var/run/meshca/token", ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "meshca-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
						Path: "token", Audience: tokenAudience, ExpirationSeconds: &expiry}}}}}},
				{Name: "meshca-root", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"}}}},
				{Name: "meshca-sockets", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			},
		},
	}
	w.created = time.Now()
	if _, err := r.n.Admin.CoreV1().Pods(w.ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// svid is w's current X509-SVID chain as the app holds it.
func (w *workload) svid() ([]*x509.Certificate, error) {
	body, err := testkit.Get("http://" + w.status + "/svid")
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	rest := []byte(body)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("no certificate in %q", body)
	}
	return chain, nil
}

// checkSVID verifies chain (leaf first) up to root and that the leaf
// names w's SPIFFE ID.
func (w *workload) checkSVID(chain []*x509.Certificate, root *x509.Certificate) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%s: SVID not under the chart's root: %w", w.name, err)
	}
	if uris := chain[0].URIs; len(uris) != 1 || uris[0].String() != w.id() {
		return fmt.Errorf("%s: SVID names %v, want %s", w.name, uris, w.id())
	}
	return nil
}
