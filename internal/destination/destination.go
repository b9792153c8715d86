// Package destination chooses the analysis pod a collection is written to (SPEC §3, §7).
package destination

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"

	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// Config is the agent's destination setting. Source pods cannot change it.
type Config struct {
	Namespace string `json:"namespace"`
	Selector  string `json:"selector"`
	// Container is the analysis pod's container; empty means its first container.
	Container string `json:"container"`
	Dir       string `json:"dir"`
	// Pod, when set, is the one analysis pod to use (sidecar mode, whose RBAC names it):
	// it is read with get, never listed.
	Pod string `json:"pod,omitempty"`
	// StaleAfter is the age past which staging directories (<dir>/<ns>/<pod>/.partial/<id>)
	// are removed: what a collection cut off before it could clean up left behind.
	StaleAfter time.Duration `json:"staleAfter" mapstructure:"staleAfter"`
	// Quota bounds what one source namespace may hold in an analysis pod.
	Quota Quota `json:"quota" mapstructure:"quota"`
	// Retention removes published collections past a count or an age (the janitor).
	Retention Retention `json:"retention" mapstructure:"retention"`
	// Mode is where collections go: ModePod (the analysis pod), ModeBucket (the bucket
	// only, no analysis pod), ModeBoth; "" is ModeBoth when S3 is set, else ModePod.
	Mode string `json:"mode,omitempty" mapstructure:"mode"`
	// NamespaceModes overrides Mode for some source namespaces (namespace: pod, bucket or
	// both), e.g. a namespace whose evidence must never sit in a shared analysis pod.
	NamespaceModes map[string]string `json:"namespaceModes,omitempty" mapstructure:"namespaceModes"`
	// S3 is the bucket (SPEC §9 destination.s3).
	S3 objstore.Config `json:"s3" mapstructure:"s3"`
}

// Defaults are SPEC §5's destination defaults: the agent's configuration and the plugin's
// flags both start from them.
func Defaults() Config {
	return Config{
		Namespace:      "podcopy",
		Selector:       "app.kubernetes.io/component=analysis",
		Dir:            "/collect",
		StaleAfter:     time.Hour,
		NamespaceModes: map[string]string{},
		S3:             objstore.Config{PartSize: "8Mi", StreamMaxSize: "5Gi", Bundles: objstore.Bundles{MemberMaxSize: "512Ki", MaxSize: "4Mi", MaxMembers: 4096}},
	}
}

// Destination modes.
const (
	ModePod    = "pod"
	ModeBucket = "bucket"
	ModeBoth   = "both"
)

// EffectiveMode is Mode with its default filled in.
func (c Config) EffectiveMode() string {
	switch {
	case c.Mode != "":
		return c.Mode
	case c.S3.Enabled():
		return ModeBoth
	}
	return ModePod
}

// ModeFor is the mode of collections from namespace ns.
func (c Config) ModeFor(ns string) string {
	if m, ok := c.NamespaceModes[ns]; ok && m != "" {
		return m
	}
	return c.EffectiveMode()
}

// UsesPod reports whether collections from namespace ns go to an analysis pod.
func (c Config) UsesPod(ns string) bool { return c.ModeFor(ns) != ModeBucket }

// Quota bounds what one source namespace holds in an analysis pod (below <dir>/<ns>/):
// Bytes (a quantity; "" or "0": no bound) of everything, follow files included, and
// Collections (0: no bound) published. A collection that would pass either is refused
// before it writes (reason QuotaExceeded).
type Quota struct {
	Bytes       string `json:"bytes,omitempty" mapstructure:"bytes"`
	Collections int    `json:"collections,omitempty" mapstructure:"collections"`
}

// BytesValue is Bytes in bytes (0: no bound).
func (q Quota) BytesValue() (int64, error) {
	if q.Bytes == "" {
		return 0, nil
	}
	v, err := resource.ParseQuantity(q.Bytes)
	if err != nil {
		return 0, fmt.Errorf("destination.quota.bytes %q: %w", q.Bytes, err)
	}
	return v.Value(), nil
}

// Enabled reports whether any quota is set.
func (q Quota) Enabled() bool {
	b, _ := q.BytesValue()
	return b > 0 || q.Collections > 0
}

// Retention keeps, per source pod, the last KeepLast published collections (0: all) and
// none older than MaxAge by their start time (0: forever). Staging directories and follow
// files are never touched by it.
type Retention struct {
	KeepLast int           `json:"keepLast,omitempty" mapstructure:"keepLast"`
	MaxAge   time.Duration `json:"maxAge,omitempty" mapstructure:"maxAge"`
}

// Enabled reports whether retention removes anything.
func (r Retention) Enabled() bool { return r.KeepLast > 0 || r.MaxAge > 0 }

// Validate checks the selector and dir.
func (c Config) Validate() error {
	if c.Namespace == "" {
		return errors.New("destination.namespace must be set")
	}
	if _, err := labels.Parse(c.Selector); err != nil {
		return fmt.Errorf("destination.selector %q: %w", c.Selector, err)
	}
	if err := pathname.Canonical(c.Dir); err != nil {
		return fmt.Errorf("destination.dir: %w", err)
	}
	if c.StaleAfter != 0 && c.StaleAfter < time.Minute {
		return fmt.Errorf("destination.staleAfter %s is shorter than a minute", c.StaleAfter)
	}
	if b, err := c.Quota.BytesValue(); err != nil || b < 0 || c.Quota.Collections < 0 {
		return fmt.Errorf("destination.quota: bytes %q and collections %d must be non-negative (%v)", c.Quota.Bytes, c.Quota.Collections, err)
	}
	if c.Retention.KeepLast < 0 || c.Retention.MaxAge < 0 {
		return fmt.Errorf("destination.retention: keepLast %d and maxAge %s must be non-negative", c.Retention.KeepLast, c.Retention.MaxAge)
	}
	modes := map[string]string{"destination.mode": c.Mode}
	for ns, m := range c.NamespaceModes {
		modes["destination.namespaceModes."+ns] = m
	}
	for key, m := range modes {
		switch m {
		case "", ModePod:
		case ModeBucket, ModeBoth:
			if !c.S3.Enabled() {
				return fmt.Errorf("%s %s needs destination.s3.bucket", key, m)
			}
		default:
			return fmt.Errorf("%s %q is unknown; use pod, bucket or both", key, m)
		}
	}
	return c.S3.Validate()
}

// NotReadyError means no matching analysis pod is Ready now; the request should wait.
type NotReadyError struct{ Reason string }

func (e *NotReadyError) Error() string { return e.Reason }

// Chooser picks analysis pods.
type Chooser struct {
	Client kubernetes.Interface
	Config Config
	// Lister, when set, reads the analysis pods from an informer's cache (built in main)
	// instead of asking the API server on every collection and follow tick.
	Lister listersv1.PodNamespaceLister
}

// pods returns the analysis pods matching the selector, sorted by name.
func (c Chooser) pods(ctx context.Context) ([]*corev1.Pod, error) {
	sel, err := labels.Parse(c.Config.Selector)
	if err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	if c.Lister != nil {
		if pods, err = c.Lister.List(sel); err != nil {
			return nil, fmt.Errorf("listing analysis pods in %s: %w", c.Config.Namespace, err)
		}
	} else {
		list, err := c.Client.CoreV1().Pods(c.Config.Namespace).List(ctx, metav1.ListOptions{LabelSelector: c.Config.Selector})
		if err != nil {
			return nil, fmt.Errorf("listing analysis pods in %s: %w", c.Config.Namespace, err)
		}
		for i := range list.Items {
			pods = append(pods, &list.Items[i])
		}
	}
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// Choose returns the destination container. With requested == "", it is the Ready matching
// pod whose name sorts first; otherwise requested must be a matching pod.
func (c Chooser) Choose(ctx context.Context, requested string) (exec.Target, error) {
	if c.Config.Pod != "" {
		if requested != "" && requested != c.Config.Pod {
			return exec.Target{}, failure.Invalidf("podcopy/destination %q: this agent writes only to %s (destination.pod)", requested, c.Config.Pod)
		}
		return c.named(ctx)
	}
	pods, err := c.pods(ctx)
	if err != nil {
		return exec.Target{}, err
	}
	if requested != "" {
		i := slices.IndexFunc(pods, func(p *corev1.Pod) bool { return p.Name == requested })
		if i < 0 {
			return exec.Target{}, failure.Invalidf("podcopy/destination %q is not an analysis pod: no pod of that name in namespace %s matches selector %q",
				requested, c.Config.Namespace, c.Config.Selector)
		}
		pods = pods[i : i+1]
	}
	for _, p := range pods {
		if Ready(p) {
			return c.target(p)
		}
	}
	return exec.Target{}, &NotReadyError{Reason: fmt.Sprintf("no Ready analysis pod in namespace %s matches selector %q (found %d); waiting",
		c.Config.Namespace, c.Config.Selector, len(pods))}
}

// named returns destination.pod if it matches the selector and is Ready.
func (c Chooser) named(ctx context.Context) (exec.Target, error) {
	var p *corev1.Pod
	var err error
	if c.Lister != nil {
		p, err = c.Lister.Get(c.Config.Pod)
	} else {
		p, err = c.Client.CoreV1().Pods(c.Config.Namespace).Get(ctx, c.Config.Pod, metav1.GetOptions{})
	}
	if err != nil {
		return exec.Target{}, &NotReadyError{Reason: fmt.Sprintf("analysis pod %s/%s: %v; waiting", c.Config.Namespace, c.Config.Pod, err)}
	}
	sel, err := labels.Parse(c.Config.Selector)
	if err != nil {
		return exec.Target{}, err
	}
	if !sel.Matches(labels.Set(p.Labels)) {
		return exec.Target{}, fmt.Errorf("destination.pod %s/%s does not match destination.selector %q", p.Namespace, p.Name, c.Config.Selector)
	}
	if !Ready(p) {
		return exec.Target{}, &NotReadyError{Reason: fmt.Sprintf("analysis pod %s/%s is not Ready; waiting", p.Namespace, p.Name)}
	}
	return c.target(p)
}

func (c Chooser) target(p *corev1.Pod) (exec.Target, error) {
	name := c.Config.Container
	if name == "" {
		name = p.Spec.Containers[0].Name
	} else if !slices.ContainsFunc(p.Spec.Containers, func(ct corev1.Container) bool { return ct.Name == name }) {
		return exec.Target{}, fmt.Errorf("analysis pod %s/%s has no container %q (destination.container)", p.Namespace, p.Name, name)
	}
	return exec.Target{Namespace: p.Namespace, Pod: p.Name, Container: name}, nil
}

// Ready reports whether the pod is Running, not terminating, and has condition Ready.
func Ready(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// All returns every Ready analysis pod (destination.pod alone when set).
func (c Chooser) All(ctx context.Context) ([]exec.Target, error) {
	if c.Config.Pod != "" {
		t, err := c.named(ctx)
		if err != nil {
			return nil, err
		}
		return []exec.Target{t}, nil
	}
	pods, err := c.pods(ctx)
	if err != nil {
		return nil, err
	}
	var out []exec.Target
	for _, p := range pods {
		if Ready(p) {
			if t, err := c.target(p); err == nil {
				out = append(out, t)
			}
		}
	}
	return out, nil
}
