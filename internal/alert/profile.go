package alert

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/podcopy/podcopy/pkg/request"
)

// Profiles is the receiver's profile file (a ConfigMap's profiles.yaml): which alerts start
// which collections. The first profile that matches an alert wins.
type Profiles struct {
	// DedupWindow: an alert of the same profile, rule and pod within it starts nothing new
	// (default 10m).
	DedupWindow Duration `json:"dedupWindow,omitempty"`
	// RatePerMinute bounds the collections the receiver starts, all pods together (default
	// 60); Burst is how many may start at once (default 10).
	RatePerMinute int       `json:"ratePerMinute,omitempty"`
	Burst         int       `json:"burst,omitempty"`
	Profiles      []Profile `json:"profiles"`
	// Loaded says which file contents these are (its SHA-256) and since when, for answers
	// that need it (no-match); set by whoever read the file.
	Loaded string `json:"-"`
}

// names lists the profiles' names.
func (p Profiles) names() string {
	var names []string
	for _, pr := range p.Profiles {
		names = append(names, pr.Name)
	}
	return strings.Join(names, ", ")
}

// Profile maps matching alerts to a collection.
type Profile struct {
	Name    string  `json:"name"`
	Match   Match   `json:"match"`
	Collect Collect `json:"collect"`
}

// Match selects alerts; every field set must hold.
type Match struct {
	// Source is falco or alertmanager (empty: both).
	Source string `json:"source,omitempty"`
	// Rules are Falco rule names or Alertmanager alertnames (empty: any).
	Rules []string `json:"rules,omitempty"`
	// MinPriority: the alert's priority (Falco) or severity label (Alertmanager) is at
	// least this urgent (emergency, alert, critical, error, warning, notice,
	// informational, debug).
	MinPriority string `json:"minPriority,omitempty"`
	// Labels must all be equal: Falco output fields (k8s.ns.name, ...) or Alertmanager labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// Collect is the request a matching alert sets on its pod (SPEC §1 annotations); an empty
// container is the alert's container, else the pod's default.
type Collect = request.Ask

// Duration is a time.Duration written as a Go duration string.
type Duration = request.Duration

// Defaults of the profile file.
const (
	DefaultDedupWindow   = 10 * time.Minute
	DefaultRatePerMinute = 60
	DefaultBurst         = 10
)

// ParseProfiles reads and checks a profile file; defaults are filled in.
func ParseProfiles(data []byte) (Profiles, error) {
	var p Profiles
	if err := yaml.UnmarshalStrict(bytes.TrimSpace(data), &p); err != nil {
		return p, fmt.Errorf("profiles: %w", err)
	}
	if p.DedupWindow.Duration == 0 {
		p.DedupWindow.Duration = DefaultDedupWindow
	}
	if p.RatePerMinute == 0 {
		p.RatePerMinute = DefaultRatePerMinute
	}
	if p.Burst == 0 {
		p.Burst = DefaultBurst
	}
	var errs []string
	if p.DedupWindow.Duration < 0 || p.RatePerMinute < 0 || p.Burst < 0 {
		errs = append(errs, "dedupWindow, ratePerMinute and burst must not be negative")
	}
	names := map[string]bool{}
	for i, pr := range p.Profiles {
		where := fmt.Sprintf("profiles[%d] (%s)", i, pr.Name)
		switch {
		case pr.Name == "":
			errs = append(errs, where+": no name")
		case names[pr.Name]:
			errs = append(errs, where+": a second profile of this name")
		}
		names[pr.Name] = true
		if s := pr.Match.Source; s != "" && s != SourceFalco && s != SourceAlertmanager {
			errs = append(errs, fmt.Sprintf("%s: match.source %q is unknown; use %s or %s", where, s, SourceFalco, SourceAlertmanager))
		}
		if m := pr.Match.MinPriority; m != "" && rank(m) < 0 {
			errs = append(errs, fmt.Sprintf("%s: match.minPriority %q is unknown; use one of %s", where, m, strings.Join(priorities, ", ")))
		}
		if len(pr.Collect.Paths) == 0 {
			errs = append(errs, where+": collect.paths is empty")
		}
		for _, path := range pr.Collect.Paths {
			if strings.Contains(path, ",") {
				errs = append(errs, fmt.Sprintf("%s: collect.paths %q holds a comma (one path per entry)", where, path))
			}
		}
		if pr.Collect.For.Duration != 0 && (pr.Collect.Mode != string(request.ModeFollow) || pr.Collect.For.Duration < 0) {
			errs = append(errs, where+": collect.for is a positive duration for mode follow")
		}
		switch request.Source(pr.Collect.Source) {
		case "", request.SourceAuto, request.SourceTar, request.SourceHelper:
		default:
			errs = append(errs, fmt.Sprintf("%s: collect.source %q is unknown; use %s, %s or %s", where, pr.Collect.Source, request.SourceAuto, request.SourceTar, request.SourceHelper))
		}
		if m := pr.Collect.Mode; m != "" && m != string(request.ModeOnce) && m != string(request.ModeFollow) {
			errs = append(errs, fmt.Sprintf("%s: collect.mode %q is unknown; use once or follow", where, m))
		}
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("profiles: %s", strings.Join(errs, "; "))
	}
	return p, nil
}

// Match returns the first profile that matches a (nil: none).
func (p Profiles) Match(a Alert) *Profile {
	for i := range p.Profiles {
		if p.Profiles[i].Match.matches(a) {
			return &p.Profiles[i]
		}
	}
	return nil
}

func (m Match) matches(a Alert) bool {
	if m.Source != "" && m.Source != a.Source {
		return false
	}
	if len(m.Rules) > 0 && !slices.Contains(m.Rules, a.Rule) {
		return false
	}
	if m.MinPriority != "" {
		if r := rank(a.Priority); r < 0 || r > rank(m.MinPriority) {
			return false
		}
	}
	for k, v := range m.Labels {
		if got, ok := a.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Annotations are the request annotations a profile sets on the alert's pod for alert a
// (trigger: one per profile, rule and pod per dedup window; nil values remove what an
// earlier request left, so the request is exactly the profile's). The pod's own
// podcopy/destination is left as it is.
func (pr Profile) Annotations(a Alert, trigger, record string, now time.Time) map[string]*string {
	ask := pr.Collect
	if ask.Container == "" {
		ask.Container = a.Container
	}
	ann := ask.Patch(trigger, now)
	ann[request.AnnotationAlert] = &record
	return ann
}
