package chart

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/meshca/meshca/test/kubetest"
)

// TestServerSideDryRun sends every object of every value set, the plain
// manifests and the sidecar example to a real kube-apiserver as a
// server-side dry run with strict field validation: the API server's own
// schema, defaulting and admission accept them (an unknown field, a
// wrong type or an invalid native sidecar fails). ServiceMonitor and
// PrometheusRule need the Prometheus Operator's CRDs, which the test bed
// does not have; their shape is checked in TestRendering.
func TestServerSideDryRun(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{Name: "chart"})
	ctx := context.Background()
	for _, ns := range []string{Namespace, "shop"} {
		if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	dryRun := func(t *testing.T, objs []*unstructured.Unstructured) {
		t.Helper()
		sent := 0
		for _, o := range objs {
			gvk := o.GroupVersionKind()
			if gvk.Group == "monitoring.coreos.com" {
				continue
			}
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Errorf("%s %s: %v", gvk, o.GetName(), err)
				continue
			}
			var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
			if m.Scope.Name() == "namespace" {
				r = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
			}
			opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}
			if _, err := r.Create(ctx, o, opts); err != nil {
				t.Errorf("dry run of %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
			}
			sent++
		}
		if sent == 0 {
			t.Error("nothing was sent")
		}
	}
	for name := range ValueSets {
		t.Run(name, func(t *testing.T) { dryRun(t, render(t, name)) })
	}
	// The dry run can fail: a misspelt field in extraEnv passes the chart's
	// schema (extraEnv is the API server's to check) but not the API server.
	t.Run("unknown field refused", func(t *testing.T) {
		out, err := Template(Namespace, "--set-json", `issuer.extraEnv=[{"name":"A","valeu":"x"}]`)
		if err != nil {
			t.Fatal(err)
		}
		d := find(decode(t, out), "Deployment", "meshca")
		opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}
		gvr := appsv1.SchemeGroupVersion.WithResource("deployments")
		_, err = dyn.Resource(gvr).Namespace(Namespace).Create(ctx, d, opts)
		if err == nil || !strings.Contains(err.Error(), "valeu") {
			t.Errorf("dry run of a Deployment with an unknown field: %v", err)
		}
	})
	for _, file := range []string{"meshca.yaml", "workload-with-agent.yaml"} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(Root(), "deploy", "kubernetes", file))
			if err != nil {
				t.Fatal(err)
			}
			var objs []*unstructured.Unstructured
			for _, o := range decode(t, data) {
				switch o.GetKind() {
				case "Namespace":
					continue // created above
				case "ServiceAccount":
					if o.GetNamespace() == "shop" {
						// The pod's admission looks its service account up.
						sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: o.GetName()}}
						if _, err := c.Admin.CoreV1().ServiceAccounts("shop").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
							t.Fatal(err)
						}
						continue
					}
				}
				objs = append(objs, o)
			}
			dryRun(t, objs)
		})
	}
}
