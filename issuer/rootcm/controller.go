package rootcm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/util/workqueue"

	"github.com/meshca/meshca/trust"
)

// BundleSource supplies the issuer's trust bundle (issuer.BundleSource
// satisfies it).
type BundleSource interface {
	// Current returns the newest bundle, nil when there is none yet, and a
	// channel closed once a newer one replaces it.
	Current() (*trust.TrustBundle, <-chan struct{})
}

// fieldManager names meshca's writes in the ConfigMaps' managedFields.
const fieldManager = "meshca"

// workers is how many namespaces are written at once.
const workers = 2

// Controller keeps the root ConfigMaps while its replica holds the Lease.
type Controller struct {
	cfg Config
	sel selection
	log *slog.Logger
}

// New returns a Controller for a valid cfg.
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Name = orDefault(cfg.Name, DefaultName)
	cfg.Key = orDefault(cfg.Key, DefaultKey)
	cfg.LeaseName = orDefault(cfg.LeaseName, DefaultLeaseName)
	cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = cfg.durations()
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Controller{cfg: cfg, sel: newSelection(cfg), log: log.With("component", "rootcm", "identity", cfg.Identity)}, nil
}

// Run campaigns for the Lease until ctx is done and, while this replica
// leads, keeps every selected namespace's ConfigMap equal to the own roots
// of bundles' current bundle. Losing the Lease stops all writes; the replica
// then campaigns again. On return the Lease is released if held. It returns
// nil when ctx is done.
func (c *Controller) Run(ctx context.Context, bundles BundleSource) error {
	lock := &leaseLock{client: c.cfg.Client, namespace: c.cfg.LeaseNamespace, name: c.cfg.LeaseName,
		identity: c.cfg.Identity, owner: c.cfg.OwnerClusterRole}
	for ctx.Err() == nil {
		// A term ends when the Lease is lost, or when writing fails for
		// good: then this replica steps down (releasing the Lease) so that
		// another one writes.
		term, stepDown := context.WithCancel(ctx)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   c.cfg.LeaseDuration,
			RenewDeadline:   c.cfg.RenewDeadline,
			RetryPeriod:     c.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            c.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lead context.Context) {
					c.log.Info("leading: writing root ConfigMaps")
					if err := c.lead(lead, bundles); err != nil && lead.Err() == nil {
						c.log.Error("root ConfigMaps stopped; stepping down", "err", err)
						stepDown()
					}
				},
				OnStoppedLeading: func() { c.log.Info("not leading: root ConfigMap writes stopped") },
			},
		})
		if err != nil {
			stepDown()
			return fmt.Errorf("rootcm: leader election: %w", err)
		}
		le.Run(term)
		stepDown()
	}
	return nil
}

// leader is the state of one term as leader.
type leader struct {
	c     *Controller
	queue workqueue.TypedRateLimitingInterface[string]
	nss   listersv1.NamespaceLister
	cms   listersv1.ConfigMapLister
	// owners lists the owner ClusterRole; nil without an owner.
	owners rbaclisters.ClusterRoleLister
	pem    atomic.Pointer[string]
}

// lead writes the ConfigMaps until ctx (the term) ends.
func (c *Controller) lead(ctx context.Context, bundles BundleSource) error {
	l := &leader{c: c, queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "rootcm"})}
	defer l.queue.ShutDown()

	nsFactory := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = c.cfg.Selector }))
	cmFactory := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", c.cfg.Name).String()
		}))
	nsInf := nsFactory.Core().V1().Namespaces()
	cmInf := cmFactory.Core().V1().ConfigMaps()
	l.nss, l.cms = nsInf.Lister(), cmInf.Lister()
	if _, err := nsInf.Informer().AddEventHandler(handler(l.queue, func(o metav1.Object) string { return o.GetName() })); err != nil {
		return fmt.Errorf("namespace handler: %w", err)
	}
	if _, err := cmInf.Informer().AddEventHandler(handler(l.queue, func(o metav1.Object) string { return o.GetNamespace() })); err != nil {
		return fmt.Errorf("configmap handler: %w", err)
	}
	synced := []cache.InformerSynced{nsInf.Informer().HasSynced, cmInf.Informer().HasSynced}
	factories := []informers.SharedInformerFactory{nsFactory, cmFactory}
	if c.cfg.OwnerClusterRole != "" {
		ownerFactory, ownerSynced, err := l.watchOwner()
		if err != nil {
			return err
		}
		synced = append(synced, ownerSynced)
		factories = append(factories, ownerFactory)
	}
	for _, f := range factories {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for l.next(ctx) {
			}
		})
	}
	l.followBundles(ctx, bundles)
	l.queue.ShutDown()
	wg.Wait()
	return nil
}

// watchOwner sets up the informer of the owner ClusterRole alone (RBAC may
// restrict the watch to its name): any change of it, or a new one of that
// name, queues every namespace; while it is deleted nothing is written.
func (l *leader) watchOwner() (informers.SharedInformerFactory, cache.InformerSynced, error) {
	name := l.c.cfg.OwnerClusterRole
	f := informers.NewSharedInformerFactoryWithOptions(l.c.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := f.Rbac().V1().ClusterRoles()
	l.owners = inf.Lister()
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { l.enqueueAll() },
		UpdateFunc: func(_, _ any) { l.enqueueAll() },
		DeleteFunc: func(any) {
			l.c.log.Warn("owner ClusterRole deleted: root ConfigMaps are no longer written", "owner", name)
		},
	}); err != nil {
		return nil, nil, fmt.Errorf("owner handler: %w", err)
	}
	return f, inf.Informer().HasSynced, nil
}

// followBundles publishes each new bundle's PEM and queues every namespace,
// until ctx is done.
func (l *leader) followBundles(ctx context.Context, bundles BundleSource) {
	for {
		tb, changed := bundles.Current()
		if tb != nil {
			pem := ownRootsPEM(tb)
			if old := l.pem.Swap(&pem); old == nil || *old != pem {
				l.c.log.Info("root ConfigMaps follow bundle", "sequence", tb.Sequence)
			}
			l.enqueueAll()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// ownRootsPEM is what the ConfigMap holds: every root of the issuer's own
// trust domains, in the bundle's order.
// Empty when the bundle has no own roots: nothing is then written.
func ownRootsPEM(tb *trust.TrustBundle) string {
	own := tb.OwnRoots()
	if own == nil {
		return ""
	}
	return string(own.PEM())
}

func (l *leader) enqueueAll() {
	nss, err := l.nss.List(l.c.sel.selector)
	if err != nil {
		l.c.log.Error("list namespaces", "err", err)
		return
	}
	for _, ns := range nss {
		l.queue.Add(ns.Name)
	}
}

// next handles one queued namespace; false once the queue shuts down.
func (l *leader) next(ctx context.Context) bool {
	ns, quit := l.queue.Get()
	if quit {
		return false
	}
	defer l.queue.Done(ns)
	if err := l.sync(ctx, ns); err != nil {
		if ctx.Err() == nil {
			l.c.log.Warn("root ConfigMap write failed; retrying", "namespace", ns, "err", err)
			l.queue.AddRateLimited(ns)
		}
		return true
	}
	l.queue.Forget(ns)
	return true
}

// sync brings namespace ns's ConfigMap to the current roots.
func (l *leader) sync(ctx context.Context, ns string) error {
	pem := l.pem.Load()
	if pem == nil {
		return nil // no bundle yet; followBundles queues everything when one comes
	}
	nsObj, err := l.nss.Get(ns)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace: %w", err)
	}
	if !l.c.sel.selected(nsObj) {
		return nil
	}
	owner, err := l.owner()
	if errors.Is(err, errNoOwner) {
		return nil // nothing is written without the owner; its return queues everything
	}
	if err != nil {
		return err
	}
	cur, err := l.cms.ConfigMaps(ns).Get(l.c.cfg.Name)
	if apierrors.IsNotFound(err) {
		cur, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("get configmap: %w", err)
	}
	what, obj := plan(ns, cur, target{name: l.c.cfg.Name, key: l.c.cfg.Key, pem: *pem, owner: owner})
	if what == opNone && cur != nil && !owned(cur, owner) {
		l.c.log.Debug("root ConfigMap not ours: left as it is", "namespace", ns, "labels", cur.Labels)
	}
	cms := l.c.cfg.Client.CoreV1().ConfigMaps(ns)
	switch what {
	case opCreate:
		_, err = cms.Create(ctx, obj, metav1.CreateOptions{FieldManager: fieldManager})
	case opUpdate:
		_, err = cms.Update(ctx, obj, metav1.UpdateOptions{FieldManager: fieldManager})
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s configmap: %w", what, err)
	}
	l.c.log.Info("root ConfigMap written", "namespace", ns, "op", what.String())
	return nil
}

// owner returns the reference the written ConfigMaps carry: nil without
// an owner, errNoOwner while the owner does not exist or is being deleted.
func (l *leader) owner() (*metav1.OwnerReference, error) {
	if l.owners == nil {
		return nil, nil
	}
	cr, err := l.owners.Get(l.c.cfg.OwnerClusterRole)
	if apierrors.IsNotFound(err) || (err == nil && cr.DeletionTimestamp != nil) {
		return nil, errNoOwner
	}
	if err != nil {
		return nil, fmt.Errorf("owner ClusterRole: %w", err)
	}
	return ownerRef(cr), nil
}

// handler queues the namespace key(o) of every added, changed or deleted
// object.
func handler(q workqueue.TypedRateLimitingInterface[string], key func(metav1.Object) string) cache.ResourceEventHandler {
	add := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if o, ok := obj.(metav1.Object); ok {
			q.Add(key(o))
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, obj any) { add(obj) },
		DeleteFunc: add,
	}
}
