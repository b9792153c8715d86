package request

import (
	"fmt"
	"strings"
	"time"
)

// Ask is a request as a client asks for it: the kubectl plugin from its flags, the alert
// receiver from a profile's collect (whose file format it is). Patch is the one place that
// turns it into the request annotations of SPEC §1.
type Ask struct {
	Paths []string `json:"paths"`
	// Container defaults to the pod's default container (the alert receiver: the alert's).
	Container string `json:"container,omitempty"`
	// Mode is once (default) or follow, with Interval.
	Mode     string `json:"mode,omitempty"`
	Interval string `json:"interval,omitempty"`
	// Source is podcopy/source: shell, helper or auto ("": the agent's source.mode).
	Source string `json:"source,omitempty"`
	// Include: spec, events, logs (once only).
	Include []string `json:"include,omitempty"`
	// CollectOn: termination and/or restart (once only): arm the pod instead of collecting now.
	CollectOn []string `json:"collectOn,omitempty"`
	// For: how long a follow runs (podcopy/follow-until, from now; 0: until stopped).
	For Duration `json:"for,omitempty"`
}

// Patch is the merge patch of annotations that makes a pod's request exactly a, asked at
// now with trigger (podcopy/trigger): every request annotation a leaves empty is removed
// (a nil value), so nothing of an earlier request stays. podcopy/alert is removed too (only
// the alert receiver sets it, after Patch); podcopy/destination, the pod's choice of
// analysis pod, is left as it is.
func (a Ask) Patch(trigger string, now time.Time) map[string]*string {
	interval, until := "", ""
	if a.Mode == string(ModeFollow) {
		interval = a.Interval
		if a.For.Duration > 0 {
			until = now.Add(a.For.Duration).UTC().Format(time.RFC3339)
		}
	}
	return map[string]*string{
		AnnotationCollect:     nonEmpty(strings.Join(a.Paths, ",")),
		AnnotationContainer:   nonEmpty(a.Container),
		AnnotationMode:        nonEmpty(a.Mode),
		AnnotationInterval:    nonEmpty(interval),
		AnnotationFollowUntil: nonEmpty(until),
		AnnotationSource:      nonEmpty(a.Source),
		AnnotationInclude:     nonEmpty(strings.Join(a.Include, ",")),
		AnnotationCollectOn:   nonEmpty(strings.Join(a.CollectOn, ",")),
		AnnotationTrigger:     nonEmpty(trigger),
		AnnotationAlert:       nil,
	}
}

// StopPatch is the merge patch that removes a pod's request (podcopy/destination, the pod's
// choice of analysis pod, stays).
func StopPatch() map[string]*string {
	p := Ask{}.Patch("", time.Time{})
	for k := range p {
		p[k] = nil
	}
	return p
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Duration is a time.Duration written as a Go duration string ("10m").
type Duration struct{ time.Duration }

// UnmarshalJSON reads "10m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a Go duration such as 10m", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }
