// Package watch feeds source pods with podcopy requests from informers into a rate-limited
// workqueue served by a fixed number of workers.
package watch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

// ErrShutdown is the cause syncs still running are cancelled with when the shutdown grace
// period ends.
var ErrShutdown = errors.New("agent shutting down: the collection was interrupted after the shutdown grace period; change podcopy/trigger to run it again")

// Syncer handles one pod (collect.Handler in production). An error is retried with the
// queue's rate limit; one that is a Requeue is a wait, logged quietly, and the pod is synced
// again after its RequeueAfter (with the rate limit when 0).
type Syncer interface {
	Sync(ctx context.Context, pod *corev1.Pod) error
	Forget(uid types.UID)
}

// Requeue is a Sync error that is a wait: sync the pod again after RequeueAfter (0: with the
// queue's rate limit). collect.RetryError is one.
type Requeue interface {
	error
	RequeueAfter() time.Duration
}

// Options configure the Controller.
type Options struct {
	// Workers is the number of collections in flight at once.
	Workers int
	// Grace is how long in-flight collections may run after shutdown begins.
	Grace time.Duration
	// Drain, when set, is called once shutdown begins and must return when follow loops
	// and the like have stopped; it shares the grace period with the workers.
	Drain func()
}

// Controller runs the queue and workers over pod informers it is given (built and started
// by the caller, as in sample-controller).
type Controller struct {
	opts    Options
	syncer  Syncer
	queue   workqueue.TypedRateLimitingInterface[string]
	listers []listersv1.PodLister
	synced  []cache.InformerSynced
	ready   atomic.Bool
}

// PodInformers builds the source pods' informer factories: one per namespace (one for all
// namespaces when none is given), limited to nodeName when set, with Transform. The caller
// passes their pod informers to New and starts them.
func PodInformers(client kubernetes.Interface, namespaces []string, nodeName string) []informers.SharedInformerFactory {
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	var out []informers.SharedInformerFactory
	for _, ns := range namespaces {
		out = append(out, informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithNamespace(ns),
			informers.WithTransform(Transform),
			informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
				if nodeName != "" {
					lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
				}
			})))
	}
	return out
}

// New builds a Controller that syncs the pods of the given informers.
func New(syncer Syncer, pods []coreinformers.PodInformer, opts Options) (*Controller, error) {
	if opts.Workers < 1 {
		return nil, fmt.Errorf("workers must be at least 1, got %d", opts.Workers)
	}
	c := &Controller{
		opts:   opts,
		syncer: syncer,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "podcopy"}),
	}
	for _, inf := range pods {
		if _, err := inf.Informer().AddEventHandler(c.handlers()); err != nil {
			return nil, err
		}
		c.listers = append(c.listers, inf.Lister())
		c.synced = append(c.synced, inf.Informer().HasSynced)
	}
	return c, nil
}

// Transform keeps what podcopy reads of a pod and drops the rest (managedFields, every
// annotation but podcopy's own and kubectl's default container, most of the spec), so memory
// stays small with many pods and a tenant's large annotations are not kept (issue 20).
func Transform(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
			Labels: pod.Labels, DeletionTimestamp: pod.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
	for k, v := range pod.Annotations {
		if !strings.HasPrefix(k, "podcopy/") && k != "kubectl.kubernetes.io/default-container" {
			continue
		}
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[k] = v
	}
	for _, ct := range pod.Spec.Containers {
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: ct.Name, Image: ct.Image})
	}
	for _, ct := range pod.Spec.InitContainers { // native sidecars (restartPolicy Always) can be read from
		if ct.RestartPolicy != nil && *ct.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out.Spec.InitContainers = append(out.Spec.InitContainers, corev1.Container{Name: ct.Name, Image: ct.Image, RestartPolicy: ct.RestartPolicy})
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		out.Status.ContainerStatuses = append(out.Status.ContainerStatuses,
			corev1.ContainerStatus{Name: cs.Name, ImageID: cs.ImageID, ContainerID: cs.ContainerID, State: cs.State, Ready: cs.Ready, RestartCount: cs.RestartCount})
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		out.Status.InitContainerStatuses = append(out.Status.InitContainerStatuses,
			corev1.ContainerStatus{Name: cs.Name, ImageID: cs.ImageID, ContainerID: cs.ContainerID, State: cs.State, Ready: cs.Ready, RestartCount: cs.RestartCount})
	}
	out.Status.Conditions = pod.Status.Conditions
	return out, nil
}

func (c *Controller) handlers() cache.ResourceEventHandler {
	add := func(pod *corev1.Pod) {
		if key, err := cache.MetaNamespaceKeyFunc(pod); err == nil {
			c.queue.Add(key)
		}
	}
	enqueue := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && request.HasRequest(pod) {
			add(pod)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(oldObj, newObj any) {
			oldPod, _ := oldObj.(*corev1.Pod)
			newPod, _ := newObj.(*corev1.Pod)
			// Our own status writes change nothing to do; skip them unless the request changed.
			if oldPod != nil && newPod != nil && onlyStatusChanged(oldPod, newPod) {
				return
			}
			// A removed request is synced too: it stops a follow.
			if oldPod != nil && newPod != nil && request.HasRequest(oldPod) && !request.HasRequest(newPod) {
				add(newPod)
				return
			}
			enqueue(newObj)
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				c.syncer.Forget(pod.UID)
			}
		},
	}
}

func onlyStatusChanged(a, b *corev1.Pod) bool {
	if a.Status.Phase != b.Status.Phase || !containersSame(a, b) || (a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) || a.Annotations[status.Annotation] == b.Annotations[status.Annotation] {
		return false
	}
	for _, pair := range [][2]map[string]string{{a.Annotations, b.Annotations}, {b.Annotations, a.Annotations}} {
		for k, v := range pair[0] {
			if k != status.Annotation && pair[1][k] != v {
				return false
			}
		}
	}
	return true
}

func containersSame(a, b *corev1.Pod) bool {
	if len(a.Status.ContainerStatuses) != len(b.Status.ContainerStatuses) {
		return false
	}
	for i := range a.Status.ContainerStatuses {
		ca, cb := a.Status.ContainerStatuses[i], b.Status.ContainerStatuses[i]
		if (ca.State.Running == nil) != (cb.State.Running == nil) || ca.RestartCount != cb.RestartCount {
			return false
		}
	}
	return true
}

// Ready reports whether the informers have synced.
func (c *Controller) Ready() bool { return c.ready.Load() }

// Run waits for the informers' caches, starts the workers and blocks until ctx is done and the workers have
// drained: in-flight collections get opts.Grace to finish, then are cancelled with
// ErrShutdown. Queued requests that did not start are left for the next agent.
func (c *Controller) Run(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return errors.Join(errors.New("informers did not sync"), ctx.Err())
	}
	c.ready.Store(true)
	log.Info("informers synced", "workers", c.opts.Workers)

	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	var workers sync.WaitGroup
	for range c.opts.Workers {
		workers.Go(func() {
			for c.next(ctx, workCtx) {
			}
		})
	}
	<-ctx.Done()
	c.ready.Store(false)
	c.queue.ShutDown()
	done := make(chan struct{})
	go func() {
		if c.opts.Drain != nil {
			c.opts.Drain()
		}
		workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(c.opts.Grace):
		log.Info("shutdown grace period over; interrupting collections", "grace", c.opts.Grace)
		cancelWork(ErrShutdown)
		<-done
	}
	return nil
}

// next processes one queue item; false when the queue has shut down.
func (c *Controller) next(stopCtx, workCtx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	if stopCtx.Err() != nil {
		return true // shutting down: do not start new work
	}
	pod, err := c.get(key)
	if err != nil || pod == nil {
		c.queue.Forget(key)
		return true
	}
	c.Requeue(workCtx, key, c.syncer.Sync(workCtx, pod.DeepCopy()))
	return true
}

// Ended is called when work a sync started on the pod key (a collection, in the
// executor's goroutine) has ended with err: the pod is synced again, at once when err is
// nil (what changed while the work ran was not acted on), else as Requeue says.
func (c *Controller) Ended(ctx context.Context, key string, err error) {
	if err == nil {
		c.queue.Forget(key)
		c.queue.Add(key)
		return
	}
	c.Requeue(ctx, key, err)
}

// Requeue handles the outcome of a sync of the pod key: nil forgets the key's failures; a
// Requeue error syncs it again after its RequeueAfter (with the rate limit when 0); any
// other error is logged and retried with the rate limit.
func (c *Controller) Requeue(ctx context.Context, key string, err error) {
	log := logr.FromContextOrDiscard(ctx).WithValues("pod", key)
	var wait Requeue
	switch {
	case errors.As(err, &wait) && wait.RequeueAfter() > 0:
		log.V(1).Info("will sync again", "in", wait.RequeueAfter().String(), "reason", err.Error())
		c.queue.Forget(key) // the delay comes from the status, not from the failures counted
		c.queue.AddAfter(key, wait.RequeueAfter())
	case errors.As(err, &wait):
		log.V(1).Info("will retry", "reason", err.Error())
		c.queue.AddRateLimited(key)
	case err != nil:
		log.Error(err, "sync failed; will retry")
		c.queue.AddRateLimited(key)
	default:
		c.queue.Forget(key)
	}
}

func (c *Controller) get(key string) (*corev1.Pod, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil, err
	}
	for _, l := range c.listers { // the one whose namespace holds it (or the all-namespaces one)
		if pod, err := l.Pods(ns).Get(name); err == nil {
			return pod, nil
		}
	}
	return nil, nil // deleted since it was queued
}

// NodeTransform keeps a Node's name and Ready condition (what the node-loss outcome reads)
// and drops the rest: a Node's image list and managedFields are most of its size, and the
// agent watches every node.
func NodeTransform(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		TypeMeta:   node.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: node.Name, UID: node.UID, ResourceVersion: node.ResourceVersion},
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = append(out.Status.Conditions, c)
		}
	}
	return out, nil
}
