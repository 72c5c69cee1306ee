package k8s

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshca/meshca/internal/testkit"
)

// checkUninstall runs `helm uninstall`: every object of the release is
// gone (cluster-wide ones too), its pods with them, and nothing serves the
// issuer's port. What the issuer itself wrote is left, exactly as
// docs/kubernetes.md says: the istio-ca-root-cert ConfigMaps (labelled
// app.kubernetes.io/managed-by=meshca) and the Lease that elected their
// writer.
func checkUninstall(t *testing.T, r *release) {
	before := r.releaseObjects(t)
	for _, want := range []string{"Deployment " + r.ns + "/meshca", "ClusterRole /meshca-" + r.ns, "ClusterRoleBinding /meshca-" + r.ns + "-istio-root-cert"} {
		if !slices.Contains(before, want) {
			t.Fatalf("the release's objects %v lack %s: the listing misses what uninstall must remove", before, want)
		}
	}
	r.helm(t, "uninstall", releaseName, "--wait", "--timeout", "2m")
	r.uninstalled = true
	testkit.Eventually(t, 2*time.Minute, "nothing of the release left", func() error {
		if left := r.releaseObjects(t); len(left) > 0 {
			return fmt.Errorf("left: %s", strings.Join(left, ", "))
		}
		return nil
	})
	if c, err := net.DialTimeout("tcp", r.issuerAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections", r.issuerAddr)
	}
	left := r.issuerWritten(t)
	for _, o := range left {
		if !strings.HasPrefix(o, "ConfigMap ") || !strings.HasSuffix(o, "/istio-ca-root-cert") {
			if o != "Lease "+r.ns+"/meshca-istio-root-configmaps" {
				t.Errorf("left behind, not documented: %s", o)
			}
		}
	}
	if !slices.Contains(left, "Lease "+r.ns+"/meshca-istio-root-configmaps") {
		t.Errorf("the documented Lease is not there (left: %v); the documentation is out of date", left)
	}
}

// releaseObjects lists the objects labelled with the release's instance
// label, of every kind the chart creates, and the release's own records.
func (r *release) releaseObjects(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + releaseName}
	c := r.n.Admin
	var left []string
	add := func(kind string, names []string, err error) {
		if err != nil {
			t.Fatalf("list %s: %v", kind, err)
		}
		for _, n := range names {
			left = append(left, kind+" "+n)
		}
	}
	add(list(c.AppsV1().Deployments(r.ns).List(ctx, sel)))
	add(list(c.AppsV1().ReplicaSets(r.ns).List(ctx, sel)))
	add(list(c.CoreV1().Pods(r.ns).List(ctx, sel)))
	add(list(c.CoreV1().Services(r.ns).List(ctx, sel)))
	add(list(c.CoreV1().ConfigMaps(r.ns).List(ctx, sel)))
	add(list(c.CoreV1().Secrets(r.ns).List(ctx, sel)))
	add(list(c.CoreV1().Secrets(r.ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + releaseName})))
	add(list(c.CoreV1().ServiceAccounts(r.ns).List(ctx, sel)))
	add(list(c.PolicyV1().PodDisruptionBudgets(r.ns).List(ctx, sel)))
	add(list(c.RbacV1().Roles(r.ns).List(ctx, sel)))
	add(list(c.RbacV1().RoleBindings(r.ns).List(ctx, sel)))
	add(list(c.RbacV1().ClusterRoles().List(ctx, sel)))
	add(list(c.RbacV1().ClusterRoleBindings().List(ctx, sel)))
	return left
}

// issuerWritten lists what the issuer wrote itself: ConfigMaps labelled
// app.kubernetes.io/managed-by=meshca in every namespace and the Leases of
// the release's namespace.
func (r *release) issuerWritten(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var left []string
	cms, err := r.n.Admin.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=meshca"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cm := range cms.Items {
		left = append(left, "ConfigMap "+cm.Namespace+"/"+cm.Name)
	}
	leases, err := r.n.Admin.CoordinationV1().Leases(r.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Items {
		left = append(left, "Lease "+l.Namespace+"/"+l.Name)
	}
	return left
}

// list returns the kind (the List type's name) and the namespace/name of
// each item of a typed List result.
func list[L runtime.Object](l L, err error) (string, []string, error) {
	if err != nil {
		return "", nil, err
	}
	items, err := meta.ExtractList(l)
	if err != nil {
		return "", nil, err
	}
	var names []string
	for _, o := range items {
		m, err := meta.Accessor(o)
		if err != nil {
			return "", nil, err
		}
		names = append(names, m.GetNamespace()+"/"+m.GetName())
	}
	kind := strings.TrimSuffix(reflect.TypeOf(l).Elem().Name(), "List")
	return kind, names, nil
}
