package chart

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// render renders one value set and splits it into objects.
func render(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	out, err := Template(Namespace, ValueSets[name]...)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, out)
}

func decode(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			if err.Error() == "EOF" {
				return objs
			}
			t.Fatalf("rendered YAML: %v", err)
		}
		if m == nil {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	return nil
}

func TestLint(t *testing.T) {
	for name, args := range ValueSets {
		t.Run(name, func(t *testing.T) {
			if out, err := Tool("helm", append([]string{"lint", "--strict", ChartDir()}, args...)...); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// TestInvalidValuesRefused: the schema refuses unknown keys and bad
// values, and the templates refuse combinations that cannot work, each
// with a message naming the problem.
func TestInvalidValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown top-level key", []string{"--set", "replicas=2"}, "additional properties 'replicas' not allowed"},
		{"unknown nested key", []string{"--set", "issuer.store.dsn=postgres://x"}, "additional properties 'dsn' not allowed"},
		{"bad duration", []string{"--set", "issuer.leafTTL=forever"}, "/issuer/leafTTL"},
		{"bad mode", []string{"--set", "issuer.mode=central"}, "/issuer/mode"},
		{"bad port", []string{"--set", "issuer.port=70000"}, "/issuer/port"},
		{"negative minReadySeconds", []string{"--set", "issuer.minReadySeconds=-1"}, "/issuer/minReadySeconds"},
		{"no audiences", []string{"--set", "issuer.attestation.audiences=null"}, "audiences"},
		{"bad bind address", []string{"--set", "issuer.bindAddress=everywhere"}, "/issuer/bindAddress"},
		{"bad pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, "/image/pullPolicy"},
		{"replicas on sqlite", []string{"--set", "issuer.replicas=2"}, "needs issuer.store.driver postgres"},
		{"postgres without a secret", []string{"--set", "issuer.store.driver=postgres"}, "needs store.dsnSecret.name"},
		{"replicas without a shared root", []string{"--set", "issuer.replicas=2", "--set", "issuer.store.driver=postgres",
			"--set", "issuer.store.dsnSecret.name=db"}, "must share a root CA"},
		{"upstream without a bundle", []string{"--set", "issuer.mode=upstream", "--set", "issuer.upstream.address=root:15020"}, "bundleConfigMap"},
		{"upstream without an address", []string{"--set", "issuer.mode=upstream", "--set", "issuer.upstream.bundleConfigMap=b"}, "upstream.address"},
		{"root key without certificate", []string{"--set", "issuer.rootCA.keyPEM=x"}, "needs issuer.rootCA.certPEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Template(Namespace, tc.args...)
			if err == nil {
				t.Fatalf("helm template accepted %v:\n%.400s", tc.args, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template %v: %v, want it to mention %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestPodsAreHardened: every pod of every value set runs as 65532 with the
// RuntimeDefault seccomp profile, and every container has a read-only
// root filesystem, no capabilities, no privilege escalation and probes on
// the operations endpoints.
func TestPodsAreHardened(t *testing.T) {
	for name := range ValueSets {
		t.Run(name, func(t *testing.T) {
			deployments := 0
			for _, o := range render(t, name) {
				if o.GetKind() != "Deployment" {
					continue
				}
				deployments++
				var d appsv1.Deployment
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
					t.Fatal(err)
				}
				checkPod(t, d.Name, d.Spec.Template.Spec)
			}
			if deployments == 0 {
				t.Fatal("no Deployment rendered")
			}
		})
	}
}

func checkPod(t *testing.T, name string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v", name, psc)
	}
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
			sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s/%s: securityContext %+v", name, c.Name, sc)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
			c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("%s/%s: probes %+v %+v", name, c.Name, c.ReadinessProbe, c.LivenessProbe)
		}
	}
}

// TestRendering checks what each value set is for: replicas with a PDB and
// the DSN and root CA from Secrets; the root and the join token Secret;
// the ServiceMonitor and a PrometheusRule carrying every alert of
// deploy/observability; host networking on the chosen port.
func TestRendering(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		objs := render(t, "default")
		if find(objs, "PodDisruptionBudget", "") != nil {
			t.Error("a PodDisruptionBudget for one replica")
		}
		svc := find(objs, "Service", "meshca")
		ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		if len(ports) == 0 || fmt.Sprint(ports[0].(map[string]any)["port"]) != "15012" {
			t.Errorf("Service ports %v, want 15012 first", ports)
		}
		owner := find(objs, "ClusterRole", "meshca-meshca-system-istio-root-cert")
		if find(objs, "Role", "meshca-leader") == nil || owner == nil {
			t.Fatal("the root ConfigMaps' RBAC is missing")
		}
		checkOwnerRole(t, owner)
		configs, err := Configs()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(configs["issuer.yaml"]), "ownerClusterRole: "+owner.GetName()+"\n") {
			t.Errorf("issuer.yaml does not name the ClusterRole %s as the owner:\n%s", owner.GetName(), configs["issuer.yaml"])
		}
	})
	t.Run("ha-postgres", func(t *testing.T) {
		objs := render(t, "ha-postgres")
		pdb := find(objs, "PodDisruptionBudget", "meshca")
		if pdb == nil {
			t.Fatal("no PodDisruptionBudget")
		}
		d := find(objs, "Deployment", "meshca")
		if r, _, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas"); fmt.Sprint(r) != "3" {
			t.Errorf("replicas = %v", r)
		}
		vols, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
		var secrets []string
		for _, v := range vols {
			if s, ok := v.(map[string]any)["secret"].(map[string]any); ok {
				secrets = append(secrets, s["secretName"].(string))
			}
		}
		slices.Sort(secrets)
		if !slices.Equal(secrets, []string{"meshca-db", "meshca-root-ca"}) {
			t.Errorf("secret volumes %v", secrets)
		}
	})
	t.Run("upstream-with-root", func(t *testing.T) {
		objs := render(t, "upstream-with-root")
		if find(objs, "Deployment", "meshca-root") == nil || find(objs, "Service", "meshca-root") == nil {
			t.Error("no root Deployment and Service")
		}
		if find(objs, "Secret", "meshca-join-token") == nil {
			t.Error("no join token Secret")
		}
		if find(objs, "Role", "meshca-leader") != nil {
			t.Error("root ConfigMaps off, but their RBAC is rendered")
		}
	})
	t.Run("monitoring", func(t *testing.T) {
		objs := render(t, "monitoring")
		if find(objs, "ServiceMonitor", "meshca") == nil {
			t.Error("no ServiceMonitor")
		}
		rule := find(objs, "PrometheusRule", "meshca")
		if rule == nil {
			t.Fatal("no PrometheusRule")
		}
		alerts, err := os.ReadFile(filepath.Join(Root(), "deploy", "observability", "alerts.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want := decode(t, alerts)[0].Object["groups"]
		got, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
		if len(got) == 0 || !equalJSON(t, got, want) {
			t.Error("the PrometheusRule's groups differ from deploy/observability/alerts.yaml")
		}
	})
	t.Run("host-network", func(t *testing.T) {
		d := find(render(t, "host-network"), "Deployment", "meshca")
		if hn, _, _ := unstructured.NestedBool(d.Object, "spec", "template", "spec", "hostNetwork"); !hn {
			t.Error("hostNetwork is not set")
		}
		// No declared ports (they would be host ports: one replica per
		// node); probes by number; the replicas share the ports.
		cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		issuer := cs[0].(map[string]any)
		if ports, ok := issuer["ports"]; ok {
			t.Errorf("host-network issuer declares ports %v", ports)
		}
		if port, _, _ := unstructured.NestedFieldNoCopy(issuer, "readinessProbe", "httpGet", "port"); fmt.Sprint(port) != "9090" {
			t.Errorf("readiness probe port %v, want 9090", port)
		}
		configs, err := Configs(ValueSets["host-network"]...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(configs["issuer.yaml"]), "reusePort: true") {
			t.Errorf("host-network issuer.yaml lacks reusePort: true:\n%s", configs["issuer.yaml"])
		}
		def, err := Configs()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(def["issuer.yaml"]), "reusePort") {
			t.Error("pod-network issuer.yaml sets reusePort")
		}
	})
}

// checkOwnerRole: the owner of the root ConfigMaps may read itself, by
// name, and no other RBAC object, and may not change or delete anything of
// RBAC.
func checkOwnerRole(t *testing.T, owner *unstructured.Unstructured) {
	t.Helper()
	rules, _, _ := unstructured.NestedSlice(owner.Object, "rules")
	var rbacRules []map[string]any
	for _, r := range rules {
		rule := r.(map[string]any)
		if fmt.Sprint(rule["apiGroups"]) == "[rbac.authorization.k8s.io]" {
			rbacRules = append(rbacRules, rule)
		}
	}
	if len(rbacRules) != 1 {
		t.Fatalf("%d rules on RBAC objects, want the one reading the owner: %v", len(rbacRules), rules)
	}
	r := rbacRules[0]
	if fmt.Sprint(r["resources"]) != "[clusterroles]" || fmt.Sprint(r["resourceNames"]) != "["+owner.GetName()+"]" ||
		fmt.Sprint(r["verbs"]) != "[get list watch]" {
		t.Errorf("owner rule %v, want get/list/watch of clusterroles named %s only", r, owner.GetName())
	}
}

// TestGeneratedFilesUpToDate: the checked-in manifests, kustomize base and
// alert copy are what `make manifests` writes now; and the kustomize base
// builds to the same objects as the plain manifests.
func TestGeneratedFilesUpToDate(t *testing.T) {
	files, err := Generated()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(Root(), name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is out of date (err %v): run `make manifests`", name, err)
		}
	}
	built, err := Tool("kustomize", "build", filepath.Join(Root(), "deploy", "kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	plain := decode(t, files["deploy/kubernetes/meshca.yaml"])
	fromKustomize := decode(t, built)
	if len(plain) != len(fromKustomize) {
		t.Fatalf("kustomize built %d objects, the manifests hold %d", len(fromKustomize), len(plain))
	}
	for _, o := range plain {
		k := find(fromKustomize, o.GetKind(), o.GetName())
		if k == nil || !equalJSON(t, o.Object, k.Object) {
			t.Errorf("kustomize build differs for %s %s", o.GetKind(), o.GetName())
		}
	}
}

// TestNotesSnippetMatchesExample: the sidecar snippet NOTES.txt prints for
// the default values has the agent arguments, image and token audience of
// deploy/kubernetes/workload-with-agent.yaml, the example the dry run
// checks against the API server.
func TestNotesSnippetMatchesExample(t *testing.T) {
	out, err := Tool("helm", "install", "meshca", ChartDir(), "--namespace", Namespace, "--dry-run=client", "--set", "image.tag=0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	notes := string(out[bytes.Index(out, []byte("NOTES:")):])
	data, err := os.ReadFile(filepath.Join(Root(), "deploy", "kubernetes", "workload-with-agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pod := find(decode(t, data), "Pod", "web")
	var spec corev1.PodSpec
	raw, _, _ := unstructured.NestedMap(pod.Object, "spec")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &spec); err != nil {
		t.Fatal(err)
	}
	agent := spec.InitContainers[0]
	want := append([]string{"image: " + agent.Image, "restartPolicy: Always",
		"audience: " + spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.Audience}, agent.Args...)
	for _, w := range want {
		if !strings.Contains(notes, w) {
			t.Errorf("NOTES.txt lacks %q of the example:\n%s", w, notes)
		}
	}
}
