package rootcm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// errNoOwner: the owner ClusterRole does not exist, so nothing is written.
var errNoOwner = errors.New("owner ClusterRole not found")

// ownerRef is the reference to ClusterRole cr that the written objects
// carry. It marks the owner as their controller and does not block the
// owner's deletion (blockOwnerDeletion would need the finalizers
// permission on it where OwnerReferencesPermissionEnforcement is on).
func ownerRef(cr *rbacv1.ClusterRole) *metav1.OwnerReference {
	controller := true
	return &metav1.OwnerReference{
		APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole",
		Name: cr.Name, UID: cr.UID, Controller: &controller,
	}
}

// getOwner reads the owner ClusterRole named name from the API server;
// one being deleted counts as missing.
func getOwner(ctx context.Context, client kubernetes.Interface, name string) (*metav1.OwnerReference, error) {
	cr, err := client.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && cr.DeletionTimestamp != nil) {
		return nil, fmt.Errorf("%w: %s", errNoOwner, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get owner ClusterRole %s: %w", name, err)
	}
	return ownerRef(cr), nil
}

// leaseLock is the election's resourcelock.Interface: a Lease like
// client-go's resourcelock.LeaseLock, labelled as meshca's and, with an
// owner, carrying the owner's reference from its creation on (an existing
// Lease without one gets it at its next update). Every write keeps the
// reference, so a Lease that a replica writes after the owner was deleted
// is collected as well.
type leaseLock struct {
	client    kubernetes.Interface
	namespace string
	name      string
	identity  string
	// owner is the owner ClusterRole's name; empty: none.
	owner string
	lease *coordinationv1.Lease
}

var _ resourcelock.Interface = (*leaseLock)(nil)

func (l *leaseLock) leases() coordinationv1client.LeaseInterface {
	return l.client.CoordinationV1().Leases(l.namespace)
}

// Get implements resourcelock.Interface.
func (l *leaseLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	lease, err := l.leases().Get(ctx, l.name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	l.lease = lease
	return record(lease)
}

// Create implements resourcelock.Interface. With an owner that does not
// exist it fails: no replica leads then.
func (l *leaseLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: l.name, Namespace: l.namespace,
			Labels: map[string]string{ManagedByLabel: ManagedByValue},
		},
		Spec: resourcelock.LeaderElectionRecordToLeaseSpec(&ler),
	}
	if l.owner != "" {
		ref, err := getOwner(ctx, l.client, l.owner)
		if err != nil {
			return err
		}
		lease.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	created, err := l.leases().Create(ctx, lease, metav1.CreateOptions{FieldManager: fieldManager})
	if err != nil {
		return err
	}
	l.lease = created
	return nil
}

// Update implements resourcelock.Interface. A Lease written before it had
// an owner (or a label) gets them here.
func (l *leaseLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	if l.lease == nil {
		return errors.New("lease not read yet")
	}
	lease := l.lease.DeepCopy()
	lease.Spec = resourcelock.LeaderElectionRecordToLeaseSpec(&ler)
	if lease.Labels[ManagedByLabel] != ManagedByValue {
		lease.Labels = maps.Clone(lease.Labels)
		if lease.Labels == nil {
			lease.Labels = map[string]string{}
		}
		lease.Labels[ManagedByLabel] = ManagedByValue
	}
	if l.owner != "" && metav1.GetControllerOfNoCopy(lease) == nil {
		ref, err := getOwner(ctx, l.client, l.owner)
		if err != nil {
			return err
		}
		lease.OwnerReferences = append(lease.OwnerReferences, *ref)
	}
	updated, err := l.leases().Update(ctx, lease, metav1.UpdateOptions{FieldManager: fieldManager})
	if err != nil {
		return err
	}
	l.lease = updated
	return nil
}

// RecordEvent implements resourcelock.Interface: the election writes no
// Events (they would outlive the release).
func (l *leaseLock) RecordEvent(string) {}

// Describe implements resourcelock.Interface.
func (l *leaseLock) Describe() string { return l.namespace + "/" + l.name }

// Identity implements resourcelock.Interface.
func (l *leaseLock) Identity() string { return l.identity }

func record(lease *coordinationv1.Lease) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r := resourcelock.LeaseSpecToLeaderElectionRecord(&lease.Spec)
	raw, err := json.Marshal(*r)
	if err != nil {
		return nil, nil, err
	}
	return r, raw, nil
}
