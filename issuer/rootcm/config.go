// Package rootcm keeps Istio's root ConfigMap, istio-ca-root-cert, in the
// namespaces of a Kubernetes cluster: every sidecar and gateway mounts it to
// trust the mesh's roots. One replica of the issuer writes at a time, chosen
// by a coordination.k8s.io Lease; it creates the ConfigMap in new
// namespaces, repairs edits and deletions, and rewrites every ConfigMap when
// the bundle changes (a root rotation).
//
// The ConfigMap holds the roots of the issuer's own trust domains
// (TrustBundle.OwnRoots), as istiod's does: federated roots reach Envoy by
// other channels (mesh config caCertificates, SPIFFE bundles), and putting
// them here would make every workload trust another mesh's leaves as its
// own.
//
// The controller writes only ConfigMaps it owns: those it created, labelled
// app.kubernetes.io/managed-by=meshca and controlled by no other object
// than its owner (below). A ConfigMap of that name that someone else wrote
// (istiod's, a tenant's) is left exactly as it is, never relabelled,
// overwritten or deleted: the namespace keeps the trust anchor its owner
// put there.
//
// Owner (Config.OwnerClusterRole): when set, every object the controller
// writes, the ConfigMaps in all namespaces and the Lease, carries an
// ownerReference to that ClusterRole (a cluster-scoped object may own
// objects in every namespace). Deleting the ClusterRole (uninstalling the
// Helm release that made it) then has Kubernetes' garbage collector delete
// them, including any that a replica still running writes afterwards: it
// writes them with the same reference, to an owner that no longer exists.
// While the owner does not exist nothing is written. Without an owner, what
// the controller wrote stays until deleted by hand.
//
// RBAC the issuer's service account needs: namespaces get/list/watch;
// configmaps get/list/watch/create/update (cluster-wide: the ConfigMap
// watch spans every namespace, filtered by name); leases
// (coordination.k8s.io) get/create/update in LeaseNamespace; with an owner,
// clusterroles get/list/watch restricted (resourceNames) to the owner.
package rootcm

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// Defaults applied by New for zero fields.
const (
	DefaultName          = "istio-ca-root-cert"
	DefaultKey           = "root-cert.pem"
	DefaultLeaseName     = "meshca-istio-root-configmaps"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// ManagedByLabel marks the ConfigMaps this package writes.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "meshca"
)

// Config configures a Controller.
type Config struct {
	// Client talks to the cluster. Required.
	Client kubernetes.Interface
	// Namespaces, when not empty, are the only namespaces that get the
	// ConfigMap. Empty means every namespace (subject to Selector).
	Namespaces []string
	// Selector is a label selector (kubectl syntax, e.g.
	// "istio-injection=enabled") a namespace must match. Empty matches all.
	Selector string
	// Name of the ConfigMap; empty means DefaultName.
	Name string
	// Key of the PEM roots in the ConfigMap's data; empty means DefaultKey.
	Key string
	// LeaseNamespace holds the Lease that elects the writing replica.
	// Required.
	LeaseNamespace string
	// LeaseName is the Lease's name; empty means DefaultLeaseName.
	LeaseName string
	// Identity names this replica in the Lease (the pod name, say).
	// Required, and distinct per replica.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election (see
	// k8s.io/client-go/tools/leaderelection); zero means the Default
	// values. A replica that stops renewing is replaced within
	// LeaseDuration.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// OwnerClusterRole names the ClusterRole that owns every object the
	// controller writes (see the package documentation): the ConfigMaps and
	// the Lease get an ownerReference to it, and nothing is written while
	// it does not exist. Empty: no owner; the objects stay until deleted by
	// hand.
	OwnerClusterRole string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports what is wrong with c. It does not change c.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("client is required"))
	}
	if c.LeaseNamespace == "" {
		errs = append(errs, errors.New("lease namespace is required"))
	}
	if c.Identity == "" {
		errs = append(errs, errors.New("identity is required"))
	}
	for _, ns := range c.Namespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("namespace %q: %s", ns, msgs[0]))
		}
	}
	if _, err := labels.Parse(c.Selector); err != nil {
		errs = append(errs, fmt.Errorf("selector: %w", err))
	}
	if c.Name != "" {
		if msgs := validation.IsDNS1123Subdomain(c.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("name %q: %s", c.Name, msgs[0]))
		}
	}
	if c.Key != "" {
		if msgs := validation.IsConfigMapKey(c.Key); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("key %q: %s", c.Key, msgs[0]))
		}
	}
	if c.OwnerClusterRole != "" {
		if msgs := content.IsPathSegmentName(c.OwnerClusterRole); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("owner ClusterRole %q: %s", c.OwnerClusterRole, msgs[0]))
		}
	}
	if c.LeaseDuration < 0 || c.RenewDeadline < 0 || c.RetryPeriod < 0 {
		errs = append(errs, errors.New("lease durations must not be negative"))
	}
	ld, rd, rp := c.durations()
	if ld <= rd || rd <= rp {
		errs = append(errs, fmt.Errorf("want lease duration %s > renew deadline %s > retry period %s", ld, rd, rp))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rootcm config: %w", err)
	}
	return nil
}

func (c Config) durations() (lease, renew, retry time.Duration) {
	return orDefault(c.LeaseDuration, DefaultLeaseDuration),
		orDefault(c.RenewDeadline, DefaultRenewDeadline),
		orDefault(c.RetryPeriod, DefaultRetryPeriod)
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
