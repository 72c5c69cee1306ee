package kube

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/rootcm"
	"github.com/meshca/meshca/test/kubetest"
)

// TestDeployManifests applies deploy/kubernetes/rbac.yaml and deploy/kubernetes/workload.yaml to
// a real API server, then attests the workload's token with the issuer's
// service account: the RBAC shipped is enough, and without it the issuer
// reports Unavailable (our fault), not Unauthenticated (the caller's).
func TestDeployManifests(t *testing.T) {
	c := east(t)
	ctx := context.Background()
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apply(t, c, "../../deploy/kubernetes/rbac.yaml")
	apply(t, c, "../../deploy/kubernetes/workload.yaml")
	pod, err := c.Admin.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v := pod.Spec.Volumes; len(v) == 0 || v[0].Projected == nil || v[0].Projected.Sources[0].ServiceAccountToken.Audience != audience {
		t.Fatalf("workload pod volumes %+v lack the istio-ca projected token", v)
	}
	tok := c.PodToken(t, "shop", "web", pod, audience)

	issuerClient := c.TokenClient(t, c.Token(t, "meshca-system", "meshca-issuer"))
	w := newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{Client: issuerClient}))
	w.mustIssue(t, tok, "", "spiffe://cluster.local/ns/shop/sa/web")

	// JWKS mode with the same identity: the discovery role every service
	// account has is enough.
	keys, err := attest.NewRemoteKeys(attest.RemoteKeysConfig{Client: issuerClient})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Keys(ctx); err != nil {
		t.Errorf("issuer service account cannot read the JWKS: %v", err)
	}

	// The root ConfigMaps with the same identity, owned by the shipped
	// role: the shipped roles cover the Lease, the namespace, ConfigMap
	// and owner watches (the owner's restricted to its name) and the
	// writes.
	roots := testkit.New(t, testkit.Options{}).Bundle
	const ownerRole = "meshca-issuer-istio-root-cert"
	ctl, err := rootcm.New(rootcm.Config{Client: issuerClient, Namespaces: []string{"shop"}, LeaseNamespace: "meshca-system",
		LeaseName: "meshca-deploy-test", Identity: "meshca-issuer-0", OwnerClusterRole: ownerRole})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Go(t, "root ConfigMaps", func(ctx context.Context) error { return ctl.Run(ctx, newBundleSource(t, roots.Roots()...)) })
	owner, err := c.Admin.RbacV1().ClusterRoles().Get(ctx, ownerRole, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitOwnedCM(t, c, "shop", string(roots.PEM()), owner.UID, "root ConfigMap under the shipped RBAC")
	l, err := c.Admin.CoordinationV1().Leases("meshca-system").Get(ctx, "meshca-deploy-test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkOwned(l.ObjectMeta, owner.UID); err != nil {
		t.Errorf("Lease: %v", err)
	}

	c.ServiceAccount(t, "meshca-system", "unbound")
	noRBAC := c.TokenClient(t, c.Token(t, "meshca-system", "unbound"))
	newWire(t, newTokenReview(t, c, "east", attest.TokenReviewConfig{Client: noRBAC})).mustFail(t, tok, "", codes.Unavailable)
}

// apply creates every object of a multi-document manifest file.
func apply(t *testing.T, c *kubetest.Cluster, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range strings.Split(string(data), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		if err := create(c, obj); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
	}
}

func create(c *kubetest.Cluster, obj runtime.Object) error {
	ctx, opts := context.Background(), metav1.CreateOptions{}
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = c.Admin.CoreV1().Namespaces().Create(ctx, o, opts)
	case *corev1.ServiceAccount:
		_, err = c.Admin.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *corev1.Pod:
		_, err = c.Admin.CoreV1().Pods(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		_, err = c.Admin.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = c.Admin.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	case *rbacv1.Role:
		_, err = c.Admin.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		_, err = c.Admin.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
	default:
		return fmt.Errorf("kind %T is not handled by this test", obj)
	}
	return err
}
