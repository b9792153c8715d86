// Package request turns the podcopy/* annotations of a source pod into a normalized,
// validated Request with a stable identity (SPEC §1).
package request

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
)

// Annotation keys read from a source pod.
const (
	AnnotationCollect     = "podcopy/collect"
	AnnotationContainer   = "podcopy/container"
	AnnotationTrigger     = "podcopy/trigger"
	AnnotationMode        = "podcopy/mode"
	AnnotationInterval    = "podcopy/interval"
	AnnotationDestination = "podcopy/destination"
	AnnotationSource      = "podcopy/source"
	// AnnotationCollectOn defers a once request to an occasion: "termination" (the pod got a
	// deletion timestamp: collect within its grace period) and/or "restart" (a container of
	// the pod restarted: collect after each restart).
	AnnotationCollectOn = "podcopy/collect-on"
	// AnnotationInclude adds the pod's own record to a collection: "spec", "events", "logs".
	AnnotationInclude = "podcopy/include"
	// AnnotationFollowUntil ends a follow at a time (RFC 3339): the agent ships what is left
	// and stops following then.
	AnnotationFollowUntil = "podcopy/follow-until"
	// AnnotationAlert is the alert a request answers (JSON manifest.Alert), set by the alert
	// receiver beside the request; copied into status, manifest and custody record.
	AnnotationAlert = "podcopy/alert"
	// AnnotationRequestedBy is written by admission (the install's MutatingAdmissionPolicy),
	// never by users: who last set a request annotation.
	AnnotationRequestedBy = "podcopy/requested-by"
	// AnnotationRequestOrigin is written by admission with requested-by: "creation" when the
	// request came with the pod's creation (a template: whoever created the pod asked),
	// "update" when it was set on a running pod.
	AnnotationRequestOrigin = "podcopy/request-origin"
	// DefaultContainerAnnotation is kubectl's choice of default container.
	DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"
)

// Mode is how a request collects.
type Mode string

// Modes of SPEC §1.
const (
	ModeOnce   Mode = "once"
	ModeFollow Mode = "follow"
)

// Interval limits for follow mode.
const (
	MinInterval     = 5 * time.Second
	DefaultInterval = 30 * time.Second
)

// Request is the normalized tuple of SPEC §1. Field order is the canonical JSON order.
type Request struct {
	Paths       []string `json:"paths"`
	Container   string   `json:"container"`
	Trigger     string   `json:"trigger"`
	Mode        Mode     `json:"mode"`
	Interval    string   `json:"interval"`
	Destination string   `json:"destination"`
	// CollectOn is podcopy/collect-on, sorted (empty: now). Omitted when empty, so the
	// identity of a request without it is what it always was.
	CollectOn []string `json:"collectOn,omitempty"`
	// Include is podcopy/include, sorted: the pod records to store with the files.
	Include []string `json:"include,omitempty"`
	// Occasion is the occasion a deferred request runs on ("termination", "restart-N"),
	// set by the agent when it comes, so each occasion is its own run with its own identity.
	Occasion string `json:"occasion,omitempty"`
	// Until is podcopy/follow-until (zero: follow until stopped); not part of the identity,
	// so moving it does not restart the follow.
	Until time.Time `json:"-"`
	// Alert is podcopy/alert (nil when absent); not part of the identity (the receiver
	// sets a trigger per alert).
	Alert *manifest.Alert `json:"-"`
	// Source is how files are read (SPEC §1 podcopy/source; "" when the annotation is absent:
	// the agent's source.mode); not part of the identity.
	Source Source `json:"-"`
	// RequestedBy is SPEC §1 podcopy/requested-by (set by admission); not part of the identity.
	RequestedBy string `json:"-"`
	// Origin is podcopy/request-origin (set by admission); not part of the identity.
	Origin string `json:"-"`
}

// Source is how a request's files are read.
type Source string

// Sources of SPEC §1.
const (
	// SourceAuto reads with the container's own tools when it has them, else the helper.
	SourceAuto Source = "auto"
	// SourceTar reads with the container's own tar (and sh for globs and follow).
	SourceTar Source = "tar"
	// SourceHelper reads with the podcopy binary: in an ephemeral container aimed at the
	// container, or in the container itself when it is the podcopy sidecar.
	SourceHelper Source = "helper"
)

// ID is the hex SHA-256 of the request's canonical JSON.
func (r Request) ID() string {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a struct of strings always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// IntervalDuration is the follow interval (zero for once).
func (r Request) IntervalDuration() time.Duration {
	d, _ := time.ParseDuration(r.Interval)
	return d
}

// CollectionID names one run of r started at start (SPEC §3).
func CollectionID(start time.Time, requestID string) string {
	return start.UTC().Format("20060102T150405Z") + "-" + requestID[:8]
}

// HasRequest reports whether the pod carries a podcopy request at all.
func HasRequest(pod *corev1.Pod) bool {
	_, ok := pod.Annotations[AnnotationCollect]
	return ok
}

// invalid is a request that must be rejected (a *failure.Invalid); its message says what
// to change.
func invalid(format string, args ...any) error { return failure.Invalidf(format, args...) }

// Parse reads and validates the request on pod against pol. Every failure is a *failure.Invalid.
func Parse(pod *corev1.Pod, pol policy.Policy) (Request, error) {
	a := pod.Annotations
	r := Request{RequestedBy: a[AnnotationRequestedBy], Origin: a[AnnotationRequestOrigin]}
	paths, err := parsePaths(a[AnnotationCollect])
	if err != nil {
		return r, err
	}
	for _, p := range paths {
		if err := pol.Check(p); err != nil {
			return r, invalid("%s %q: %v", AnnotationCollect, p, err)
		}
	}
	r.Paths = paths
	if r.Container, err = parseContainer(pod); err != nil {
		return r, err
	}
	r.Trigger = a[AnnotationTrigger]
	switch m := Mode(strings.TrimSpace(a[AnnotationMode])); m {
	case "", ModeOnce:
		r.Mode = ModeOnce
	case ModeFollow:
		r.Mode = ModeFollow
		d := DefaultInterval
		if s := strings.TrimSpace(a[AnnotationInterval]); s != "" {
			if d, err = time.ParseDuration(s); err != nil {
				return r, invalid("%s %q is not a Go duration such as 30s or 1m", AnnotationInterval, s)
			}
		}
		if d < MinInterval {
			return r, invalid("%s %s is shorter than the minimum %s", AnnotationInterval, d, MinInterval)
		}
		r.Interval = d.String()
	default:
		return r, invalid("%s %q is unknown; use %q or %q", AnnotationMode, m, ModeOnce, ModeFollow)
	}
	switch src := Source(strings.TrimSpace(a[AnnotationSource])); src {
	case "": // the agent's source.mode
	case SourceAuto, SourceTar, SourceHelper:
		r.Source = src
	default:
		return r, invalid("%s %q is unknown; use %q, %q or %q", AnnotationSource, src, SourceAuto, SourceTar, SourceHelper)
	}
	if r.CollectOn, err = parseList(a[AnnotationCollectOn], AnnotationCollectOn, OnTermination, OnRestart); err != nil {
		return r, err
	}
	if len(r.CollectOn) > 0 && r.Mode != ModeOnce {
		return r, invalid("%s applies to once requests; remove it or %s", AnnotationCollectOn, AnnotationMode)
	}
	if r.Include, err = parseList(a[AnnotationInclude], AnnotationInclude, IncludeSpec, IncludeEvents, IncludeLogs); err != nil {
		if strings.Contains(a[AnnotationInclude], IncludeCheckpoint) {
			return r, invalid("%s %q: %s is not supported by this agent (the node's kubelet checkpoint API needs CRIU in the runtime); use %s, %s or %s",
				AnnotationInclude, a[AnnotationInclude], IncludeCheckpoint, IncludeSpec, IncludeEvents, IncludeLogs)
		}
		return r, err
	}
	if len(r.Include) > 0 && r.Mode != ModeOnce {
		return r, invalid("%s applies to once requests; remove it or %s", AnnotationInclude, AnnotationMode)
	}
	if u := strings.TrimSpace(a[AnnotationFollowUntil]); u != "" {
		if r.Mode != ModeFollow {
			return r, invalid("%s applies to follow requests; remove it or set %s: follow", AnnotationFollowUntil, AnnotationMode)
		}
		if r.Until, err = time.Parse(time.RFC3339, u); err != nil {
			return r, invalid("%s %q is not an RFC 3339 time such as 2026-12-02T15:04:05Z", AnnotationFollowUntil, u)
		}
	}
	if raw, ok := a[AnnotationAlert]; ok {
		if r.Alert, err = parseAlert(raw); err != nil {
			return r, err
		}
	}
	if d := strings.TrimSpace(a[AnnotationDestination]); d != "" {
		if errs := validation.IsDNS1123Subdomain(d); len(errs) > 0 {
			return r, invalid("%s %q is not a pod name: %s", AnnotationDestination, d, strings.Join(errs, "; "))
		}
		r.Destination = d
	}
	return r, nil
}

// Occasions of podcopy/collect-on.
const (
	OnTermination = "termination"
	OnRestart     = "restart"
)

// Records of podcopy/include.
const (
	IncludeSpec       = "spec"
	IncludeEvents     = "events"
	IncludeLogs       = "logs"
	IncludeCheckpoint = "checkpoint"
)

// parseList reads a comma-separated list of allowed words, sorted and without repeats (nil
// when empty).
func parseList(value, key string, allowed ...string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(value, ",") {
		w := strings.TrimSpace(raw)
		if w == "" {
			continue
		}
		if !slices.Contains(allowed, w) {
			return nil, invalid("%s %q: %q is unknown; use %s", key, value, w, strings.Join(allowed, ", "))
		}
		out = append(out, w)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// MaxAlertBytes bounds podcopy/alert.
const MaxAlertBytes = 4096

func parseAlert(raw string) (*manifest.Alert, error) {
	if len(raw) > MaxAlertBytes {
		return nil, invalid("%s is %d bytes, more than %d", AnnotationAlert, len(raw), MaxAlertBytes)
	}
	var al manifest.Alert
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&al); err != nil {
		return nil, invalid("%s is not an alert record: %v", AnnotationAlert, err)
	}
	return &al, nil
}

// Has reports whether list holds w.
func Has(list []string, w string) bool { return slices.Contains(list, w) }

func parsePaths(value string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(value, ",") {
		p := strings.TrimSpace(raw)
		if p == "" {
			continue
		}
		if err := checkPath(p); err != nil {
			return nil, err
		}
		out = append(out, path.Clean(p))
	}
	if len(out) == 0 {
		return nil, invalid("%s is empty; list absolute paths separated by commas", AnnotationCollect)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func checkPath(p string) error {
	if strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return invalid("%s %q contains a control character", AnnotationCollect, p)
	}
	if !strings.HasPrefix(p, "/") {
		return invalid("%s %q is not an absolute path; paths must start with /", AnnotationCollect, p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." {
			return invalid("%s %q contains %q; give the path without . or .. segments", AnnotationCollect, p, seg)
		}
	}
	if path.Clean(p) == "/" {
		return invalid("%s %q would collect the whole filesystem", AnnotationCollect, p)
	}
	if _, err := path.Match(p, ""); err != nil {
		return invalid("%s %q is not a valid glob: %v", AnnotationCollect, p, err)
	}
	return nil
}

func parseContainer(pod *corev1.Pod) (string, error) {
	name := strings.TrimSpace(pod.Annotations[AnnotationContainer])
	if name == "" {
		name = pod.Annotations[DefaultContainerAnnotation]
	}
	if name == "" && len(pod.Spec.Containers) > 0 {
		name = pod.Spec.Containers[0].Name
	}
	var names []string
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return name, nil
		}
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.InitContainers { // native sidecars run beside the app
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			if c.Name == name {
				return name, nil
			}
			names = append(names, c.Name)
		}
	}
	return "", invalid("container %q is not in pod %s/%s; its containers are %v (set %s)",
		name, pod.Namespace, pod.Name, names, AnnotationContainer)
}

// RawID identifies the annotations as written, for requests that cannot be normalized
// (rejected ones), so the same bad input is reported once.
func RawID(pod *corev1.Pod) string {
	a := pod.Annotations
	r := Request{
		Paths:       []string{a[AnnotationCollect]},
		Container:   a[AnnotationContainer],
		Trigger:     a[AnnotationTrigger],
		Mode:        Mode(a[AnnotationMode]),
		Interval:    a[AnnotationInterval],
		Destination: a[AnnotationDestination],
	}
	// The newer annotations count only when present, so a rejected request written before
	// them keeps its id (and is not reported again after an upgrade).
	var newer []string
	for _, key := range []string{AnnotationCollectOn, AnnotationInclude, AnnotationFollowUntil} {
		if v, ok := a[key]; ok {
			newer = append(newer, key+"="+v)
		}
	}
	r.CollectOn = newer // one slot of the canonical JSON, left out when empty
	return r.ID()
}
