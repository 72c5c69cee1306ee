package k8s

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/nodetest"
)

// goneWithin bounds how long after `helm uninstall --wait` returns
// anything of the release may still exist: the issuer pods' graceful
// termination and the garbage collector's pass over the dependents of the
// release's ClusterRole (the ConfigMaps and the Lease the issuer wrote,
// including any a replica still running wrote after the ClusterRole was
// gone).
const goneWithin = time.Minute

// Names of what the issuer writes itself (issuer/rootcm).
const (
	rootCMName  = "istio-ca-root-cert"
	rootCMLease = "meshca-istio-root-configmaps"
)

// foreignRootCM creates, in a namespace of its own, an istio-ca-root-cert
// ConfigMap that meshca did not write (as istiod leaves it), before the
// chart is installed: the issuer must never write or delete it.
func foreignRootCM(t *testing.T, n *nodetest.Node) *corev1.ConfigMap {
	t.Helper()
	cm, err := n.Admin.CoreV1().ConfigMaps(n.Namespace(t)).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: rootCMName, Labels: map[string]string{"istio.io/config": "true"}},
		Data:       map[string]string{"root-cert.pem": "istiod's roots"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

// checkUninstall runs `helm uninstall`: within goneWithin nothing of the
// release is left anywhere in the cluster, neither the objects of its
// manifest (cluster-wide ones too) nor their pods, nor what the issuer
// wrote itself (the istio-ca-root-cert ConfigMaps in every namespace and
// the Lease electing their writer, owned by the release's ClusterRole and
// deleted with it by the garbage collector), nor anything else new in the
// release's namespace; nothing serves the issuer's port. The ConfigMap
// istiod left (foreign) was never written and is still there.
func checkUninstall(t *testing.T, r *release, foreign *corev1.ConfigMap) {
	mc, err := metadata.NewForConfig(r.n.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	before := r.leftovers(t, mc, nil)
	for _, want := range []string{"deployments " + r.ns + "/meshca", "clusterroles /" + rootCertRole(r),
		"leases " + r.ns + "/" + rootCMLease, "configmaps " + r.ns + "/" + rootCMName} {
		if _, ok := before[want]; !ok {
			t.Fatalf("the release's objects %v lack %s: the listing misses what uninstall must remove", keys(before), want)
		}
	}
	owner := before["clusterroles /"+rootCertRole(r)]
	written := 0
	for what, o := range before {
		if o.GetLabels()["app.kubernetes.io/managed-by"] == "meshca" {
			written++
			if c := metav1.GetControllerOfNoCopy(&o); c == nil || c.UID != owner.UID || c.Kind != "ClusterRole" {
				t.Errorf("%s, written by the issuer, is not controlled by the ClusterRole %s (%s): %+v", what, owner.Name, owner.UID, o.OwnerReferences)
			}
		}
	}
	t.Logf("%d objects of the release before uninstall, %d of them written by the issuer", len(before), written)
	uids := map[types.UID]bool{}
	for _, o := range before {
		uids[o.UID] = true
	}

	r.helm(t, "uninstall", releaseName, "--wait", "--timeout", "2m")
	r.uninstalled = true
	start := time.Now()
	testkit.Eventually(t, goneWithin, "nothing of the release left", func() error {
		if left := r.leftovers(t, mc, uids); len(left) > 0 {
			return fmt.Errorf("left: %s", strings.Join(keys(left), ", "))
		}
		return nil
	})
	t.Logf("nothing of the release left %.1fs after helm uninstall --wait returned", time.Since(start).Seconds())
	if c, err := net.DialTimeout("tcp", r.issuerAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections", r.issuerAddr)
	}
	got, err := r.n.Admin.CoreV1().ConfigMaps(foreign.Namespace).Get(context.Background(), foreign.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the ConfigMap meshca did not write is gone: %v", err)
	}
	if got.ResourceVersion != foreign.ResourceVersion {
		t.Errorf("the ConfigMap meshca did not write was changed: labels %v, owners %v, data %v", got.Labels, got.OwnerReferences, got.Data)
	}
}

// rootCertRole is the release's ClusterRole of the root ConfigMaps, their
// owner.
func rootCertRole(r *release) string { return releaseName + "-" + r.ns + "-istio-root-cert" }

// leftovers lists, by "RESOURCE NAMESPACE/NAME", every object in the
// cluster that belongs to the release: labelled with its instance label or
// as written by meshca, controlled by one of uids (the release's objects
// before uninstall), or in the release's namespace and not there before
// the install (r.baseline).
func (r *release) leftovers(t *testing.T, mc metadata.Interface, uids map[types.UID]bool) map[string]metav1.PartialObjectMetadata {
	t.Helper()
	left := map[string]metav1.PartialObjectMetadata{}
	for key, o := range r.allObjects(t, mc) {
		lbl := o.Labels
		owned := slices.ContainsFunc(o.OwnerReferences, func(ref metav1.OwnerReference) bool { return uids[ref.UID] })
		if lbl["app.kubernetes.io/instance"] == releaseName || lbl["app.kubernetes.io/managed-by"] == "meshca" || owned ||
			(o.Namespace == r.ns && !r.baseline[key]) {
			left[key] = o
		}
	}
	return left
}

// namespaceObjects lists, by "RESOURCE NAMESPACE/NAME", every object in
// the release's namespace.
func (r *release) namespaceObjects(t *testing.T) map[string]bool {
	t.Helper()
	mc, err := metadata.NewForConfig(r.n.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]bool{}
	for key, o := range r.allObjects(t, mc) {
		if o.Namespace == r.ns {
			objs[key] = true
		}
	}
	return objs
}

// allObjects lists the metadata of every object of every kind the API
// server can list, by "RESOURCE NAMESPACE/NAME". Events are left out: the
// API server expires them.
func (r *release) allObjects(t *testing.T, mc metadata.Interface) map[string]metav1.PartialObjectMetadata {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	objs := map[string]metav1.PartialObjectMetadata{}
	for _, gvr := range listable(t, r) {
		list, err := mc.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list %s: %v", gvr, err)
		}
		for _, o := range list.Items {
			objs[gvr.Resource+" "+o.Namespace+"/"+o.Name] = o
		}
	}
	return objs
}

// listable are the API server's preferred versions of every kind that
// can be listed, events left out.
func listable(t *testing.T, r *release) []schema.GroupVersionResource {
	t.Helper()
	lists, err := r.n.Admin.Discovery().ServerPreferredResources()
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var gvrs []schema.GroupVersionResource
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, res := range l.APIResources {
			if strings.Contains(res.Name, "/") || !slices.Contains(res.Verbs, "list") || res.Name == "events" {
				continue
			}
			gvrs = append(gvrs, gv.WithResource(res.Name))
		}
	}
	return gvrs
}

func keys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
