package rootcm

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// op is what a namespace's ConfigMap needs.
type op int

const (
	opNone   op = iota // as wanted, or not ours to write
	opCreate           // missing
	opUpdate           // ours, with other content or without the owner's reference
)

func (o op) String() string {
	return [...]string{"none", "create", "update"}[o]
}

// target is the ConfigMap every selected namespace should hold.
type target struct {
	name, key string
	pem       string
	// owner is the reference every written ConfigMap carries; nil without
	// an owner (Config.OwnerClusterRole unset).
	owner *metav1.OwnerReference
}

// selection decides which namespaces get the ConfigMap.
type selection struct {
	only     map[string]bool // nil: every namespace
	selector labels.Selector // never nil
}

// selected reports whether ns should hold the ConfigMap. A namespace being
// deleted gets nothing: creating in it fails anyway.
func (s selection) selected(ns *corev1.Namespace) bool {
	if ns == nil || ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating {
		return false
	}
	if s.only != nil && !s.only[ns.Name] {
		return false
	}
	return s.selector.Matches(labels.Set(ns.Labels))
}

// plan returns what namespace ns needs given its current ConfigMap (nil when
// absent) and, for opCreate and opUpdate, the object to write. Only a
// ConfigMap that owned reports as ours is ever updated. An update starts
// from a copy of cur (its resourceVersion makes the write fail on a
// concurrent change) and changes only t.key and, when missing, the owner's
// reference.
func plan(ns string, cur *corev1.ConfigMap, t target) (op, *corev1.ConfigMap) {
	if t.pem == "" {
		return opNone, nil
	}
	if cur == nil {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name: t.name, Namespace: ns,
				Labels: map[string]string{ManagedByLabel: ManagedByValue},
			},
			Data: map[string]string{t.key: t.pem},
		}
		if t.owner != nil {
			cm.OwnerReferences = []metav1.OwnerReference{*t.owner}
		}
		return opCreate, cm
	}
	if cur.DeletionTimestamp != nil || !owned(cur, t.owner) {
		return opNone, nil // recreated once the deletion is seen; or not ours
	}
	_, binary := cur.BinaryData[t.key]
	missingRef := t.owner != nil && metav1.GetControllerOfNoCopy(cur) == nil
	if cur.Data[t.key] == t.pem && !binary && !missingRef {
		return opNone, nil
	}
	next := cur.DeepCopy()
	if next.Data == nil {
		next.Data = map[string]string{}
	}
	next.Data[t.key] = t.pem
	delete(next.BinaryData, t.key) // a key may not be in both
	if missingRef {
		next.OwnerReferences = append(next.OwnerReferences, *t.owner)
	}
	return opUpdate, next
}

// owned reports whether cm is the controller's to write: labelled
// app.kubernetes.io/managed-by=meshca, and controlled by no object or by
// owner (matched by UID: an owner deleted and made again is another one).
// A ConfigMap controlled by a former owner is left to the garbage
// collector, which deletes it; it is then created anew.
func owned(cm *corev1.ConfigMap, owner *metav1.OwnerReference) bool {
	if cm.Labels[ManagedByLabel] != ManagedByValue {
		return false
	}
	ctl := metav1.GetControllerOfNoCopy(cm)
	return ctl == nil || (owner != nil && ctl.UID == owner.UID)
}

// newSelection builds the selection of c; c must be valid.
func newSelection(c Config) selection {
	sel, err := labels.Parse(c.Selector)
	if err != nil {
		sel = labels.Nothing() // unreachable after Validate; fail closed
	}
	s := selection{selector: sel}
	if len(c.Namespaces) > 0 {
		s.only = make(map[string]bool, len(c.Namespaces))
		for _, ns := range slices.Compact(slices.Sorted(slices.Values(c.Namespaces))) {
			s.only[ns] = true
		}
	}
	return s
}
