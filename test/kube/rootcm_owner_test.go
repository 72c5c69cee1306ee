package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/rootcm"
	"github.com/meshca/meshca/test/kubetest"
	"github.com/meshca/meshca/trust"
)

// ownerlessFor is how long the owner stays deleted while the test checks
// that nothing is written: many times what the controller takes to repair
// a deletion while the owner exists (about 100 ms, measured at the start).
const ownerlessFor = 3 * time.Second

// TestRootConfigMapsOwner runs the root ConfigMap controller with an owner
// ClusterRole on a real API server (no garbage collector runs here; the
// test deletes what the collector would): every ConfigMap it creates and
// its Lease carry a controller reference to the owner's UID; a ConfigMap
// and a Lease an ownerless issuer wrote are adopted; a ConfigMap of that
// name that istiod wrote is never written, and neither is one still
// controlled by a former owner; while the owner does not exist nothing is
// written, and once it is made again (a new UID) every ConfigMap is
// written with the new reference.
func TestRootConfigMapsOwner(t *testing.T) {
	c := east(t)
	ctx := t.Context()
	label := map[string]string{"meshca-rootcm": "owner"}
	leaseNS := c.Namespace(t)
	fresh, legacy, istiod := labelledNamespace(t, c, label), labelledNamespace(t, c, label), labelledNamespace(t, c, label)
	owner := createOwner(t, c)

	root := testkit.Root(t, "rootcm-owner", time.Now(), time.Hour).Certificate
	rootsPEM := string(trust.EncodeCertificates(root))
	putCM(t, c, legacy, map[string]string{rootcm.ManagedByLabel: rootcm.ManagedByValue}, "OLD ROOT")
	istiodCM := putCM(t, c, istiod, map[string]string{"istio.io/config": "true"}, "ISTIOD ROOT")
	// The Lease as an issuer without an owner left it: no label, no
	// reference, held by a replica long gone.
	gone, long := "issuer-gone", int32(1)
	if _, err := c.Admin.CoordinationV1().Leases(leaseNS).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: rootcm.DefaultLeaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &gone, LeaseDurationSeconds: &long,
			RenewTime: &metav1.MicroTime{Time: time.Now().Add(-time.Hour)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	r := &rootcmReplica{}
	var logs testkit.LogBuffer
	ctl, err := rootcm.New(rootcm.Config{
		Client: r.client(t, c.AdminConfig), Selector: "meshca-rootcm=owner", LeaseNamespace: leaseNS, Identity: "issuer-0",
		OwnerClusterRole: owner.Name, LeaseDuration: rootcmLease, RenewDeadline: rootcmRenew, RetryPeriod: rootcmRetry,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, &logs), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Go(t, "rootcm", func(ctx context.Context) error { return ctl.Run(ctx, newBundleSource(t, root)) })

	waitOwnedCM(t, c, fresh, rootsPEM, owner.UID, "created with the owner's reference")
	waitOwnedCM(t, c, legacy, rootsPEM, owner.UID, "an ownerless issuer's ConfigMap adopted")
	testkit.Eventually(t, 30*time.Second, "the Lease adopted", func() error {
		l := lease(t, c, leaseNS)
		if ptrOr(l.Spec.HolderIdentity) != "issuer-0" {
			return fmt.Errorf("held by %q", ptrOr(l.Spec.HolderIdentity))
		}
		return checkOwned(l.ObjectMeta, owner.UID)
	})
	start := time.Now()
	deleteCM(t, c, fresh)
	waitOwnedCM(t, c, fresh, rootsPEM, owner.UID, "deletion recreated")
	t.Logf("a deletion repaired %v after it, while the owner exists", time.Since(start))
	requireUntouched(t, c, istiodCM)

	// The owner goes (helm uninstall): from then on nothing is written,
	// also where the garbage collector (here: the test) deletes.
	if err := c.Admin.RbacV1().ClusterRoles().Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the controller sees the owner's deletion", func() error {
		if !strings.Contains(logs.String(), "owner ClusterRole deleted") {
			return errors.New("not logged")
		}
		return nil
	})
	before := len(r.written())
	deleteCM(t, c, fresh)
	editRootCM(t, c, legacy, "edited while ownerless")
	time.Sleep(ownerlessFor) // a negative check: nothing may happen in this window
	if w := r.written(); len(w) != before {
		t.Errorf("written while the owner did not exist: %v", w[before:])
	}
	if _, err := c.Admin.CoreV1().ConfigMaps(fresh).Get(ctx, rootcm.DefaultName, metav1.GetOptions{}); err == nil {
		t.Error("a ConfigMap was recreated while the owner did not exist")
	}

	// The owner is made again: a new UID. ConfigMaps are written with it;
	// one still controlled by the former owner is left to the garbage
	// collector, and made anew once it is gone.
	owner2 := createOwnerNamed(t, c, owner.Name)
	waitOwnedCM(t, c, fresh, rootsPEM, owner2.UID, "recreated under the new owner")
	if cm := getCM(t, c, legacy); cm.Data[rootcm.DefaultKey] != "edited while ownerless" || checkOwned(cm.ObjectMeta, owner.UID) != nil {
		t.Errorf("a ConfigMap of the former owner was written: %v %v", cm.Data, cm.OwnerReferences)
	}
	deleteCM(t, c, legacy)
	waitOwnedCM(t, c, legacy, rootsPEM, owner2.UID, "the former owner's ConfigMap, collected, made anew")
	requireUntouched(t, c, istiodCM)
	for _, w := range r.written() {
		if strings.Contains(w, "/namespaces/"+istiod+"/") {
			t.Errorf("istiod's ConfigMap was written: %s", w)
		}
	}
}

// createOwner creates a ClusterRole of a fresh name, deleted at the end.
func createOwner(tb testing.TB, c *kubetest.Cluster) *rbacv1.ClusterRole {
	tb.Helper()
	cr, err := c.Admin.RbacV1().ClusterRoles().Create(context.Background(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "meshca-owner-"}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Admin.RbacV1().ClusterRoles().Delete(context.Background(), cr.Name, metav1.DeleteOptions{}) })
	return cr
}

// createOwnerNamed creates ClusterRole name again.
func createOwnerNamed(tb testing.TB, c *kubetest.Cluster, name string) *rbacv1.ClusterRole {
	tb.Helper()
	cr, err := c.Admin.RbacV1().ClusterRoles().Create(context.Background(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return cr
}

// putCM creates ns's istio-ca-root-cert with labels and PEM content.
func putCM(tb testing.TB, c *kubetest.Cluster, ns string, labels map[string]string, pem string) *corev1.ConfigMap {
	tb.Helper()
	cm, err := c.Admin.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: rootcm.DefaultName, Labels: labels},
		Data:       map[string]string{rootcm.DefaultKey: pem},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return cm
}

func getCM(tb testing.TB, c *kubetest.Cluster, ns string) *corev1.ConfigMap {
	tb.Helper()
	cm, err := c.Admin.CoreV1().ConfigMaps(ns).Get(context.Background(), rootcm.DefaultName, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return cm
}

func deleteCM(tb testing.TB, c *kubetest.Cluster, ns string) {
	tb.Helper()
	if err := c.Admin.CoreV1().ConfigMaps(ns).Delete(context.Background(), rootcm.DefaultName, metav1.DeleteOptions{}); err != nil {
		tb.Fatal(err)
	}
}

// requireUntouched fails unless the ConfigMap is exactly as want was
// written: same resourceVersion, labels, data and no owner.
func requireUntouched(tb testing.TB, c *kubetest.Cluster, want *corev1.ConfigMap) {
	tb.Helper()
	got := getCM(tb, c, want.Namespace)
	if got.ResourceVersion != want.ResourceVersion || len(got.OwnerReferences) > 0 ||
		got.Labels[rootcm.ManagedByLabel] != "" || got.Data[rootcm.DefaultKey] != want.Data[rootcm.DefaultKey] {
		tb.Errorf("%s/%s was changed: labels %v, owners %v, %s %q", got.Namespace, got.Name, got.Labels, got.OwnerReferences,
			rootcm.DefaultKey, got.Data[rootcm.DefaultKey])
	}
}

// waitOwnedCM waits until ns's root ConfigMap holds wantPEM, is labelled
// as meshca's and is controlled by the owner with UID uid.
func waitOwnedCM(tb testing.TB, c *kubetest.Cluster, ns, wantPEM string, uid types.UID, what string) {
	tb.Helper()
	waitRootCM(tb, c, ns, wantPEM, what)
	testkit.Eventually(tb, 30*time.Second, what+" ("+ns+"), owner", func() error {
		cm, err := c.Admin.CoreV1().ConfigMaps(ns).Get(context.Background(), rootcm.DefaultName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data[rootcm.DefaultKey] != wantPEM {
			return fmt.Errorf("content changed")
		}
		return checkOwned(cm.ObjectMeta, uid)
	})
}

// checkOwned: labelled as meshca's, with exactly one controller reference,
// to the ClusterRole with UID uid, not blocking its deletion.
func checkOwned(m metav1.ObjectMeta, uid types.UID) error {
	if m.Labels[rootcm.ManagedByLabel] != rootcm.ManagedByValue {
		return fmt.Errorf("labels %v", m.Labels)
	}
	i := slices.IndexFunc(m.OwnerReferences, func(r metav1.OwnerReference) bool { return r.Controller != nil && *r.Controller })
	if i < 0 {
		return fmt.Errorf("no controller reference in %+v", m.OwnerReferences)
	}
	r := m.OwnerReferences[i]
	if r.UID != uid || r.Kind != "ClusterRole" || r.APIVersion != "rbac.authorization.k8s.io/v1" {
		return fmt.Errorf("controller %+v, want the ClusterRole of UID %s", r, uid)
	}
	if r.BlockOwnerDeletion != nil && *r.BlockOwnerDeletion {
		return fmt.Errorf("the reference blocks the owner's deletion")
	}
	return nil
}
