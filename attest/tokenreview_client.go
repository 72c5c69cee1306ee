package attest

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeClientConfig says how to reach a cluster's API server.
type KubeClientConfig struct {
	// Kubeconfig is the path of a kubeconfig file. Everything client-go
	// supports works there: client certificates, bearer tokens and exec
	// credential plugins (EKS, GKE, AKS). Empty means the in-cluster
	// configuration (the pod's service account), the usual case for the
	// issuer's own cluster.
	Kubeconfig string
	// Context selects a context of Kubeconfig. Empty means its current
	// context. Must be empty when Kubeconfig is.
	Context string
	// QPS and Burst bound the client's request rate. Zero means 200 and 400:
	// every attestation that misses the cache costs one or two requests.
	QPS   float32
	Burst int
	// Timeout is the client's backstop per HTTP request. Zero means 15s;
	// attestors set tighter per-call deadlines of their own.
	Timeout time.Duration
	// UserAgent identifies meshca in the API server's audit log. Empty means
	// "meshca".
	UserAgent string
}

// Validate reports whether c is usable.
func (c KubeClientConfig) Validate() error {
	switch {
	case c.Kubeconfig == "" && c.Context != "":
		return errors.New("kube client: context needs a kubeconfig")
	case c.QPS < 0 || c.Burst < 0:
		return fmt.Errorf("kube client: negative qps %v or burst %d", c.QPS, c.Burst)
	case c.Timeout < 0:
		return fmt.Errorf("kube client: negative timeout %s", c.Timeout)
	}
	return nil
}

// restConfig loads the client configuration (the kubeconfig file, or the
// in-cluster service account) and applies c's limits.
func (c *KubeClientConfig) restConfig() (*rest.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var (
		rc  *rest.Config
		err error
	)
	if c.Kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: c.Kubeconfig},
			&clientcmd.ConfigOverrides{CurrentContext: c.Context},
		).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kube client config: %w", err)
	}
	rc.QPS, rc.Burst, rc.Timeout, rc.UserAgent = c.QPS, c.Burst, c.Timeout, c.UserAgent
	if rc.QPS == 0 {
		rc.QPS = 200
	}
	if rc.Burst == 0 {
		rc.Burst = 400
	}
	if rc.Timeout == 0 {
		rc.Timeout = 15 * time.Second
	}
	if rc.UserAgent == "" {
		rc.UserAgent = "meshca"
	}
	return rc, nil
}

// NewKubeClient returns a clientset for the cluster c describes. It does not
// contact the API server.
func NewKubeClient(c KubeClientConfig) (kubernetes.Interface, error) {
	rc, err := c.restConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kube client: %w", err)
	}
	return cs, nil
}
