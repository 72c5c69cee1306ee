package kubetest

import (
	"context"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// callTimeout bounds each helper's API call.
const callTimeout = 30 * time.Second

// TokenTTL is the lifetime of the tokens the helpers request (the API
// server's minimum is 10 minutes).
const TokenTTL = time.Hour

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// Namespace creates a namespace with a fresh random name and returns the
// name. Namespaces are never reused: without a controller manager a deleted
// namespace stays Terminating forever.
func (c *Cluster) Namespace(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	ns, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create namespace: %v", err)
	}
	return ns.Name
}

// ServiceAccount creates ns/name. (No controller manager runs, so not even
// "default" exists until a test creates it.)
func (c *Cluster) ServiceAccount(tb testing.TB, ns, name string) *corev1.ServiceAccount {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	sa, err := c.Admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create service account %s/%s: %v", ns, name, err)
	}
	return sa
}

// Pod creates pod ns/name running as service account sa. It is never
// scheduled (there is no kubelet), which TokenRequest does not mind.
func (c *Cluster) Pod(tb testing.TB, ns, name, sa string) *corev1.Pod {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	pod, err := c.Admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// DeletePod deletes the pod at once (an unscheduled pod has nothing to wait
// for).
func (c *Cluster) DeletePod(tb testing.TB, ns, name string) {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	zero := int64(0)
	if err := c.Admin.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		tb.Fatalf("delete pod %s/%s: %v", ns, name, err)
	}
}

// DeleteServiceAccount deletes ns/name.
func (c *Cluster) DeleteServiceAccount(tb testing.TB, ns, name string) {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	if err := c.Admin.CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		tb.Fatalf("delete service account %s/%s: %v", ns, name, err)
	}
}

// PodToken requests (TokenRequest) a token of ns/sa bound to pod, with the
// given audiences, valid for TokenTTL: what the kubelet mounts as a
// projected service-account token.
func (c *Cluster) PodToken(tb testing.TB, ns, sa string, pod *corev1.Pod, audiences ...string) string {
	tb.Helper()
	return c.token(tb, ns, sa, &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}, audiences)
}

// Token requests a token of ns/sa bound to no object.
func (c *Cluster) Token(tb testing.TB, ns, sa string, audiences ...string) string {
	tb.Helper()
	return c.token(tb, ns, sa, nil, audiences)
}

func (c *Cluster) token(tb testing.TB, ns, sa string, bound *authnv1.BoundObjectReference, audiences []string) string {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	secs := int64(TokenTTL / time.Second)
	tr, err := c.Admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &secs, BoundObjectRef: bound},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("token request for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// TokenConfig returns a client configuration that authenticates to the
// cluster with a bearer token (for example a service account's), trusting
// the cluster's CA.
func (c *Cluster) TokenConfig(token string) *rest.Config {
	return &rest.Config{
		Host: c.URL, BearerToken: token, QPS: 1000, Burst: 2000, Timeout: 30 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAPEM},
	}
}

// TokenClient is a client authenticated with token.
func (c *Cluster) TokenClient(tb testing.TB, token string) kubernetes.Interface {
	tb.Helper()
	cs, err := kubernetes.NewForConfig(c.TokenConfig(token))
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}

// WriteKubeconfig writes a kubeconfig file for the cluster to path, with one
// context named after the cluster. An empty token means the admin client
// certificate; otherwise the bearer token.
func (c *Cluster) WriteKubeconfig(tb testing.TB, path, token string) {
	tb.Helper()
	user := &clientcmdapi.AuthInfo{Token: token}
	if token == "" {
		user = &clientcmdapi.AuthInfo{ClientCertificateData: c.pki.adminCert, ClientKeyData: c.pki.adminKey}
	}
	if err := c.writeKubeconfig(path, user); err != nil {
		tb.Fatalf("write kubeconfig: %v", err)
	}
}

// WriteCertKubeconfig writes a kubeconfig file for the cluster to path that
// authenticates with the given client certificate and key (PEM), for
// example from ClientCert.
func (c *Cluster) WriteCertKubeconfig(path string, certPEM, keyPEM []byte) error {
	return c.writeKubeconfig(path, &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM})
}

func (c *Cluster) writeKubeconfig(path string, user *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{c.Name: {Server: c.URL, CertificateAuthorityData: c.CAPEM}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{c.Name: user},
		Contexts:       map[string]*clientcmdapi.Context{c.Name: {Cluster: c.Name, AuthInfo: c.Name}},
		CurrentContext: c.Name,
	}
	return clientcmd.WriteToFile(cfg, path)
}
