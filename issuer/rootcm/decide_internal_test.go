package rootcm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPlan(t *testing.T) {
	tg := target{name: "istio-ca-root-cert", key: "root-cert.pem", pem: "ROOTS"}
	managed := map[string]string{ManagedByLabel: ManagedByValue}
	cm := func(data map[string]string, labels map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: tg.name, Namespace: "web", ResourceVersion: "7", Labels: labels},
			Data:       data,
		}
	}
	now, yes := metav1.Now(), true
	deleting := cm(map[string]string{"root-cert.pem": "OLD"}, managed)
	deleting.DeletionTimestamp = &now
	controlled := func(c *corev1.ConfigMap, uid string) *corev1.ConfigMap {
		c.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Namespace", Name: "x", UID: types.UID(uid), Controller: &yes}}
		return c
	}
	binary := cm(map[string]string{}, managed)
	binary.BinaryData = map[string][]byte{"root-cert.pem": []byte("ROOTS")}

	for _, tc := range []struct {
		name     string
		cur      *corev1.ConfigMap
		pem      string
		want     op
		wantData map[string]string
		wantLbl  map[string]string
	}{
		{name: "missing", cur: nil, want: opCreate, wantData: map[string]string{"root-cert.pem": "ROOTS"}, wantLbl: managed},
		{name: "up to date", cur: cm(map[string]string{"root-cert.pem": "ROOTS"}, managed), want: opNone},
		{name: "edited", cur: cm(map[string]string{"root-cert.pem": "EVIL"}, managed), want: opUpdate,
			wantData: map[string]string{"root-cert.pem": "ROOTS"}, wantLbl: managed},
		{name: "key removed, other keys kept", cur: cm(map[string]string{"x": "y"}, managed), want: opUpdate,
			wantData: map[string]string{"x": "y", "root-cert.pem": "ROOTS"}, wantLbl: managed},
		{name: "nil data", cur: cm(nil, managed), want: opUpdate,
			wantData: map[string]string{"root-cert.pem": "ROOTS"}, wantLbl: managed},
		{name: "foreign (istiod's) left alone", cur: cm(map[string]string{"root-cert.pem": "ISTIOD"}, map[string]string{"istio.io/config": "true"}), want: opNone},
		{name: "unlabelled left alone", cur: cm(map[string]string{"root-cert.pem": "OTHER"}, nil), want: opNone},
		{name: "managed-by someone else left alone", cur: cm(map[string]string{"root-cert.pem": "OTHER"}, map[string]string{ManagedByLabel: "istiod"}), want: opNone},
		{name: "ours but controlled by another object", cur: controlled(cm(map[string]string{"root-cert.pem": "OLD"}, managed), "other-uid"), want: opNone},
		{name: "key in binaryData moves to data", cur: binary, want: opUpdate,
			wantData: map[string]string{"root-cert.pem": "ROOTS"}, wantLbl: managed},
		{name: "being deleted", cur: deleting, want: opNone},
		{name: "no roots yet", cur: nil, pem: "-", want: opNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := tg
			if tc.pem == "-" {
				tgt.pem = ""
			}
			var before *corev1.ConfigMap
			if tc.cur != nil {
				before = tc.cur.DeepCopy()
			}
			got, obj := plan("web", tc.cur, tgt)
			if got != tc.want {
				t.Fatalf("op = %v, want %v", got, tc.want)
			}
			if tc.cur != nil && !equalCM(before, tc.cur) {
				t.Error("plan changed its input")
			}
			if got == opNone {
				if obj != nil {
					t.Errorf("opNone with an object %+v", obj)
				}
				return
			}
			if obj.Name != tg.name || obj.Namespace != "web" {
				t.Errorf("object %s/%s", obj.Namespace, obj.Name)
			}
			if !equalMap(obj.Data, tc.wantData) || !equalMap(obj.Labels, tc.wantLbl) {
				t.Errorf("data %v labels %v, want %v %v", obj.Data, obj.Labels, tc.wantData, tc.wantLbl)
			}
			if _, ok := obj.BinaryData[tg.key]; ok {
				t.Error("key left in binaryData")
			}
			if got == opUpdate && obj.ResourceVersion != "7" {
				t.Errorf("update without the read resourceVersion: %q", obj.ResourceVersion)
			}
		})
	}
}

// TestPlanWithOwner: with an owner, every ConfigMap written carries its
// reference; one of ours without it is adopted (its other references
// kept); one controlled by a former owner (another UID) or by anything
// else, or not labelled as ours, is not touched.
func TestPlanWithOwner(t *testing.T) {
	yes := true
	owner := &metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "meshca-istio-root-cert", UID: "uid-1", Controller: &yes}
	tg := target{name: "istio-ca-root-cert", key: "root-cert.pem", pem: "ROOTS", owner: owner}
	managed := map[string]string{ManagedByLabel: ManagedByValue}
	cm := func(data, labels map[string]string, refs ...metav1.OwnerReference) *corev1.ConfigMap {
		return &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: tg.name, Namespace: "web", ResourceVersion: "7", Labels: labels, OwnerReferences: refs},
			Data:       data,
		}
	}
	formerOwner := *owner
	formerOwner.UID = "uid-0"
	listed := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "inventory", UID: "uid-9"} // not a controller
	roots := map[string]string{"root-cert.pem": "ROOTS"}

	for _, tc := range []struct {
		name     string
		cur      *corev1.ConfigMap
		want     op
		wantRefs []metav1.OwnerReference
	}{
		{"missing", nil, opCreate, []metav1.OwnerReference{*owner}},
		{"ours, up to date", cm(roots, managed, *owner), opNone, nil},
		{"ours, edited", cm(map[string]string{"root-cert.pem": "EVIL"}, managed, *owner), opUpdate, []metav1.OwnerReference{*owner}},
		{"ours, written without an owner: adopted", cm(roots, managed), opUpdate, []metav1.OwnerReference{*owner}},
		{"ours with another, non-controller reference", cm(roots, managed, listed), opUpdate, []metav1.OwnerReference{listed, *owner}},
		{"controlled by a former owner", cm(map[string]string{"root-cert.pem": "OLD"}, managed, formerOwner), opNone, nil},
		{"istiod's", cm(map[string]string{"root-cert.pem": "ISTIOD"}, nil), opNone, nil},
		{"istiod's with our owner's reference but no label", cm(map[string]string{"root-cert.pem": "ISTIOD"}, nil, *owner), opNone, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, obj := plan("web", tc.cur, tg)
			if got != tc.want {
				t.Fatalf("op = %v, want %v", got, tc.want)
			}
			if got == opNone {
				return
			}
			if len(obj.OwnerReferences) != len(tc.wantRefs) {
				t.Fatalf("owner references %+v, want %+v", obj.OwnerReferences, tc.wantRefs)
			}
			for i, r := range obj.OwnerReferences {
				w := tc.wantRefs[i]
				if r.UID != w.UID || r.Kind != w.Kind || r.Name != w.Name || r.APIVersion != w.APIVersion || (r.Controller == nil) != (w.Controller == nil) {
					t.Errorf("owner reference %d: %+v, want %+v", i, r, w)
				}
			}
			if obj.Data[tg.key] != "ROOTS" || obj.Labels[ManagedByLabel] != ManagedByValue {
				t.Errorf("data %v labels %v", obj.Data, obj.Labels)
			}
			if r := metav1.GetControllerOfNoCopy(obj); r == nil || r.UID != owner.UID || r.BlockOwnerDeletion != nil && *r.BlockOwnerDeletion {
				t.Errorf("controller %+v, want the owner, not blocking its deletion", r)
			}
		})
	}
}

func equalMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func equalCM(a, b *corev1.ConfigMap) bool {
	return equalMap(a.Data, b.Data) && equalMap(a.Labels, b.Labels) && len(a.BinaryData) == len(b.BinaryData)
}

func TestSelected(t *testing.T) {
	ns := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	terminating := ns("a", nil)
	terminating.Status.Phase = corev1.NamespaceTerminating
	now := metav1.Now()
	deleting := ns("a", nil)
	deleting.DeletionTimestamp = &now
	inj := map[string]string{"istio-injection": "enabled"}

	for _, tc := range []struct {
		name string
		cfg  Config
		ns   *corev1.Namespace
		want bool
	}{
		{"all", Config{}, ns("a", nil), true},
		{"nil", Config{}, nil, false},
		{"terminating", Config{}, terminating, false},
		{"deleting", Config{}, deleting, false},
		{"listed", Config{Namespaces: []string{"b", "a", "a"}}, ns("a", nil), true},
		{"not listed", Config{Namespaces: []string{"b"}}, ns("a", nil), false},
		{"selector match", Config{Selector: "istio-injection=enabled"}, ns("a", inj), true},
		{"selector miss", Config{Selector: "istio-injection=enabled"}, ns("a", nil), false},
		{"listed and selector miss", Config{Namespaces: []string{"a"}, Selector: "istio-injection=enabled"}, ns("a", nil), false},
		{"invalid selector fails closed", Config{Selector: "a=(("}, ns("a", nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := newSelection(tc.cfg).selected(tc.ns); got != tc.want {
				t.Errorf("selected = %v, want %v", got, tc.want)
			}
		})
	}
}
