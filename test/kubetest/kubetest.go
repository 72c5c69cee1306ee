// Package kubetest runs a real kube-apiserver backed by a real etcd on
// 127.0.0.1 for tests: generated certificates, free ports, an admin client,
// and one-line helpers for namespaces, service accounts, pods and
// TokenRequest tokens. It is test support only; production code never
// imports it.
//
// The binaries are built by `make testbed-kube` (test/testbed/kube.mk) and
// found through $MESHCA_KUBE_APISERVER_BIN and $MESHCA_ETCD_BIN, else in
// ${XDG_CACHE_HOME:-$HOME/.cache}/meshca-testbed. Without them tests skip,
// or fail when CI=true.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshca/meshca/internal/testkit"
)

// Versions and environment variables of the test bed.
const (
	KubeVersion  = "v1.37.2"
	EtcdVersion  = "v3.7.0"
	EnvAPIServer = "MESHCA_KUBE_APISERVER_BIN"
	EnvEtcd      = "MESHCA_ETCD_BIN"
	// Issuer is every test cluster's --service-account-issuer (and
	// --api-audiences). All clusters share it, as real clusters often do, so
	// only the signing keys tell their tokens apart.
	Issuer = "https://kubernetes.default.svc.cluster.local"
)

// Time bounds. The machine running tests may be busy; these are limits,
// not expectations (a cluster is usually ready in about 5 s).
const (
	etcdReadyTimeout = 60 * time.Second
	apiReadyTimeout  = 120 * time.Second
	stopGrace        = 20 * time.Second
)

// Binaries returns the paths of kube-apiserver and etcd. When one is
// missing the test is skipped, or fails if CI=true: `make test` builds them.
func Binaries(tb testing.TB) (apiserver, etcd string) {
	tb.Helper()
	apiserver, etcd, err := findBinaries()
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("kube test bed: %v (CI=true: the test bed must be built; run `make testbed-kube`)", err)
		}
		tb.Skipf("kube test bed: %v; `make test` (or `make testbed-kube`) builds it", err)
	}
	return apiserver, etcd
}

func findBinaries() (apiserver, etcd string, err error) {
	dir := testkit.TestbedDir()
	apiserver = envOr(EnvAPIServer, filepath.Join(dir, "kube-apiserver-"+KubeVersion))
	etcd = envOr(EnvEtcd, filepath.Join(dir, "etcd-"+EtcdVersion))
	for _, p := range []string{apiserver, etcd} {
		if st, statErr := os.Stat(p); statErr != nil || st.IsDir() {
			return "", "", fmt.Errorf("binary %s not found", p)
		}
	}
	return apiserver, etcd, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Options tune New.
type Options struct {
	// Name labels the cluster in certificates and logs. Empty means "kube".
	Name string
	// Dir holds data, certificates and logs. Required for New; Start uses
	// t.TempDir().
	Dir string
	// APIServerArgs are extra kube-apiserver flags, "--name=value" each. A
	// flag the cluster sets already is replaced, not repeated (for example
	// "--authorization-mode=Node,RBAC" for a cluster with a kubelet). Nil
	// means none.
	APIServerArgs []string
}

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	Name string
	// URL is the API server, https://127.0.0.1:PORT.
	URL string
	// CAPEM is the CA of the API server's serving certificate (and of its
	// client certificates).
	CAPEM []byte
	// Admin is a cluster-admin client with raised QPS; AdminConfig is its
	// configuration.
	Admin       kubernetes.Interface
	AdminConfig *rest.Config

	dir       string
	pki       *pki
	etcd      *proc
	apiserver *proc
	apiBin    string
	apiArgs   []string
	keys      int // signing keys made by RotateSigningKey
}

// Start starts a cluster for tb and stops it in tb.Cleanup, printing the
// API server's log tail if the test failed.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	apiserver, etcd := Binaries(tb)
	opts.Dir = tb.TempDir()
	c, err := New(context.Background(), apiserver, etcd, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("kube-apiserver %s log tail:\n%s", c.Name, c.APIServerLogTail())
		}
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

// New starts etcd and kube-apiserver with the given binaries and waits until
// the API server is ready. The caller must Close the cluster.
func New(ctx context.Context, apiserverBin, etcdBin string, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("kubetest: Options.Dir is required")
	}
	if opts.Name == "" {
		opts.Name = "kube"
	}
	c := &Cluster{Name: opts.Name, dir: opts.Dir, apiBin: apiserverBin}
	if err := c.start(ctx, etcdBin, opts.APIServerArgs); err != nil {
		if cerr := c.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("kubetest cluster %s: %w", opts.Name, err)
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, etcdBin string, extraArgs []string) error {
	var err error
	if c.pki, err = newPKI(c.dir, c.Name); err != nil {
		return err
	}
	c.CAPEM = c.pki.caPEM
	ports, err := testkit.FreePorts(3)
	if err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.etcd, err = startProc("etcd", etcdBin, []string{
		"--name=default", "--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL, "--unsafe-no-fsync", "--log-level=warn",
	}, filepath.Join(c.dir, "etcd.log"))
	if err != nil {
		return err
	}
	if err := c.waitEtcd(ctx, etcdURL); err != nil {
		return err
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	c.apiArgs = []string{
		"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]), "--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(c.dir, "apiserver-certs"),
		"--tls-cert-file=" + c.pki.servingCert, "--tls-private-key-file=" + c.pki.servingKy,
		"--client-ca-file=" + c.pki.caFile,
		"--service-account-key-file=" + c.pki.saKeyFile, "--service-account-signing-key-file=" + c.pki.saKeyFile,
		"--service-account-issuer=" + Issuer, "--api-audiences=" + Issuer,
		"--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=RBAC", "--profiling=false",
		// For a cluster with a kubelet (test/nodetest): logs and exec go
		// from the API server to the kubelet, verified both ways by the CA.
		"--kubelet-client-certificate=" + c.pki.adminFile, "--kubelet-client-key=" + c.pki.adminKyFile,
		"--kubelet-certificate-authority=" + c.pki.caFile,
	}
	c.apiArgs = withFlags(c.apiArgs, extraArgs)
	c.AdminConfig = &rest.Config{
		Host: c.URL, QPS: 1000, Burst: 2000, Timeout: 30 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAPEM, CertData: c.pki.adminCert, KeyData: c.pki.adminKey},
	}
	if c.Admin, err = kubernetes.NewForConfig(c.AdminConfig); err != nil {
		return err
	}
	return c.StartAPIServer(ctx)
}

// withFlags returns args with extra appended, after dropping every flag of
// args that extra sets again.
func withFlags(args, extra []string) []string {
	out := make([]string, 0, len(args)+len(extra))
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		if !slices.ContainsFunc(extra, func(e string) bool { return strings.HasPrefix(e, name+"=") }) {
			out = append(out, a)
		}
	}
	return append(out, extra...)
}

// CAFile is the path of the cluster CA's certificate (PEM).
func (c *Cluster) CAFile() string { return c.pki.caFile }

func (c *Cluster) waitEtcd(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, etcdReadyTimeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if c.etcd.exited() {
			return fmt.Errorf("etcd exited: %v\n%s", c.etcd.err, c.etcd.tail(4000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd not healthy after %s:\n%s", etcdReadyTimeout, c.etcd.tail(4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StartAPIServer (re)starts the API server on its port with the same flags
// and waits until /readyz answers ok. It is an error if it is running.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if c.apiserver != nil && !c.apiserver.exited() {
		return errors.New("kube-apiserver is already running")
	}
	var err error
	c.apiserver, err = startProc("kube-apiserver", c.apiBin, c.apiArgs, filepath.Join(c.dir, "apiserver.log"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, apiReadyTimeout)
	defer cancel()
	rc := c.Admin.Discovery().RESTClient()
	for {
		body, err := rc.Get().AbsPath("/readyz").Do(ctx).Raw()
		if err == nil && string(body) == "ok" {
			return nil
		}
		if c.apiserver.exited() {
			return fmt.Errorf("kube-apiserver exited: %v\n%s", c.apiserver.err, c.apiserver.tail(6000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after %s (last: %v):\n%s", apiReadyTimeout, err, c.apiserver.tail(6000))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// RotateSigningKey makes the next StartAPIServer sign new service-account
// tokens with a fresh key, while it keeps accepting (and publishing at
// /openid/v1/jwks) the previous keys, as in a real key rotation. Call it
// while the API server is stopped.
func (c *Cluster) RotateSigningKey() error {
	if c.apiserver != nil && !c.apiserver.exited() {
		return errors.New("rotate signing key: kube-apiserver is running")
	}
	c.keys++
	path := filepath.Join(c.dir, fmt.Sprintf("sa-key-%d.pem", c.keys))
	if err := newSigningKey(path); err != nil {
		return err
	}
	for i, a := range c.apiArgs {
		if strings.HasPrefix(a, "--service-account-signing-key-file=") {
			c.apiArgs[i] = "--service-account-signing-key-file=" + path
		}
	}
	c.apiArgs = append(c.apiArgs, "--service-account-key-file="+path)
	return nil
}

// StopAPIServer stops the API server (etcd keeps running), so that tests
// can see what happens while it is away and after StartAPIServer.
func (c *Cluster) StopAPIServer() error {
	if c.apiserver == nil {
		return nil
	}
	return c.apiserver.stop(stopGrace)
}

// APIServerLogTail returns the end of the API server's log.
func (c *Cluster) APIServerLogTail() string {
	if c.apiserver == nil {
		return ""
	}
	return c.apiserver.tail(8000)
}

// Close stops the API server, then etcd (the other order makes the API
// server's shutdown hang on etcd). Data stays in Options.Dir.
func (c *Cluster) Close() error {
	var errs []error
	if c.apiserver != nil {
		errs = append(errs, c.apiserver.stop(stopGrace))
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.stop(stopGrace))
	}
	return errors.Join(errs...)
}
