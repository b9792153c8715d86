// Package nodeloss gives collections on a node that is gone an outcome. A node's own agent
// ends the collections of its pods, also when their kubelet stops answering (reason
// NodeUnreachable). When the whole node is gone, its agent with it, nobody would: the pod's
// status would say Running forever. The janitor's Lease holder runs a Marker: a pod on a
// node that has not been Ready for After, whose request has not ended, is marked Failed with
// reason NodeLost, and an Event says why. When the node comes back its agent finds the
// request ended (a once collection is not run again; a follow resumes from its checkpoint).
package nodeloss

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

// ReasonNodeLost is the Event reason on a pod whose collection the Marker ended.
const ReasonNodeLost = "NodeLost"

// DefaultEvery is how often the Marker looks at the nodes.
const DefaultEvery = 10 * time.Second

// NotReady reports whether node is not Ready, since when, and what its Ready condition says.
// A node without a Ready condition (still registering) counts as Ready.
func NotReady(node *corev1.Node) (since time.Time, why string, notReady bool) {
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			return time.Time{}, "", false
		}
		why = fmt.Sprintf("Ready=%s", c.Status)
		if c.Reason != "" {
			why += " (" + c.Reason + ")"
		}
		if c.Message != "" {
			why += ": " + c.Message
		}
		return c.LastTransitionTime.Time, why, true
	}
	return time.Time{}, "", false
}

// Unreachable describes node name's state for a failed collection: "" while it is Ready or
// unknown to the lister.
func Unreachable(nodes corelisters.NodeLister, name string, now time.Time) string {
	if nodes == nil || name == "" {
		return ""
	}
	node, err := nodes.Get(name)
	if err != nil {
		return ""
	}
	since, why, bad := NotReady(node)
	if !bad {
		return ""
	}
	return fmt.Sprintf("node %s is not Ready since %s (%s ago; %s)", name, since.UTC().Format(time.RFC3339),
		now.Sub(since).Round(time.Second), why)
}

// Marker marks the unfinished requests of pods on lost nodes.
type Marker struct {
	Client kubernetes.Interface
	Nodes  corelisters.NodeLister
	// Namespaces are the agent's (all when empty): one LIST of a lost node's pods each.
	Namespaces []string
	Recorder   record.EventRecorder
	// After is how long a node must not be Ready to be lost (config nodeLostAfter).
	After time.Duration
	// Every is the period (DefaultEvery when 0).
	Every time.Duration
	// ID is the id of pod's current request (request.Parse with the agent's policy).
	ID func(pod *corev1.Pod) string
	// Marked counts the requests marked (podcopy_node_lost_requests_total).
	Marked prometheus.Counter
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

func (m Marker) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Run marks now and then every Every until ctx ends. After <= 0 disables it.
func (m Marker) Run(ctx context.Context) error {
	if m.After <= 0 {
		return nil
	}
	every := m.Every
	if every <= 0 {
		every = DefaultEvery
	}
	wait.NonSlidingUntilWithContext(ctx, func(ctx context.Context) { m.Once(ctx) }, every)
	return nil
}

// Once marks the unfinished requests on every lost node and returns how many it marked.
func (m Marker) Once(ctx context.Context) int {
	log := logr.FromContextOrDiscard(ctx).WithName("nodeloss")
	nodes, err := m.Nodes.List(labels.Everything())
	if err != nil {
		log.Error(err, "listing nodes")
		return 0
	}
	now := m.now()
	namespaces := m.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	n := 0
	for _, node := range nodes {
		since, why, bad := NotReady(node)
		if !bad || now.Sub(since) < m.After {
			continue
		}
		for _, ns := range namespaces {
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			pods, err := m.Client.CoreV1().Pods(ns).List(lctx, metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node.Name).String()})
			cancel()
			if err != nil {
				log.Error(err, "listing the pods of a lost node", "node", node.Name)
				continue
			}
			for i := range pods.Items {
				pod := &pods.Items[i]
				if pod.Spec.NodeName != node.Name {
					continue // a server that ignored the field selector
				}
				msg := fmt.Sprintf("node %s is lost: not Ready since %s (%s ago, nodeLostAfter %s; %s); the collection could not end there, "+
					"and nothing of it was published (its staging is swept). Once the pod runs on a Ready node, change podcopy/trigger to collect again",
					node.Name, since.UTC().Format(time.RFC3339), now.Sub(since).Round(time.Second), m.After, why)
				marked, err := m.mark(ctx, pod, msg, now)
				switch {
				case err != nil && apierrors.IsConflict(err):
					// The pod changed since the LIST (its agent may have written): next round.
				case err != nil:
					log.Error(err, "marking a collection on a lost node", "pod", pod.Namespace+"/"+pod.Name, "node", node.Name)
				case marked:
					n++
					log.Info("collection marked: its node is lost", "pod", pod.Namespace+"/"+pod.Name, "node", node.Name, "notReadySince", since)
				}
			}
		}
	}
	return n
}

// mark writes the NodeLost status on pod when its current request has not ended. The patch
// carries the pod's resourceVersion: a pod written since it was listed is left for the next
// round (a status that landed meanwhile is never overwritten).
func (m Marker) mark(ctx context.Context, pod *corev1.Pod, msg string, now time.Time) (bool, error) {
	if pod.DeletionTimestamp != nil || !request.HasRequest(pod) {
		return false, nil
	}
	id := m.ID(pod)
	prev, _ := status.Get(pod)
	if prev.Done(id) {
		return false, nil
	}
	st := status.Status{Request: id, Phase: status.Failed, Reason: failure.NodeLost, Message: status.Printable(msg),
		CompletionTime: now.UTC().Format(time.RFC3339)}
	if prev.Request == id {
		st.Collection, st.Destination, st.StartTime, st.Attempt = prev.Collection, prev.Destination, prev.StartTime, prev.Attempt
		st.RequestedBy, st.RequestOrigin, st.Bucket = prev.RequestedBy, prev.RequestOrigin, prev.Bucket
		st.Files, st.Bytes, st.Skipped = prev.Files, prev.Bytes, prev.Skipped
	}
	val, err := json.Marshal(st)
	if err != nil {
		return false, err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":             pod.UID,
		"resourceVersion": pod.ResourceVersion,
		"annotations":     map[string]string{status.Annotation: string(val)},
	}})
	if err != nil {
		return false, err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := m.Client.CoreV1().Pods(pod.Namespace).Patch(pctx, pod.Name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: "podcopy-agent"}); err != nil {
		return false, err
	}
	if m.Recorder != nil {
		m.Recorder.Event(pod, corev1.EventTypeWarning, ReasonNodeLost, status.Printable(msg))
	}
	if m.Marked != nil {
		m.Marked.Inc()
	}
	return true, nil
}
