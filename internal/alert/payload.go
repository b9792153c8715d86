// Package alert is podcopy's alert receiver: it accepts the webhooks real alerting sends
// (Falcosidekick's webhook output and Alertmanager's webhook, version 4), matches each alert
// against profiles, and answers a match by setting the pod's request annotations with the
// receiver's own identity, once per profile, rule and pod within a window, at a bounded rate.
package alert

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sources of alerts.
const (
	SourceFalco        = "falco"
	SourceAlertmanager = "alertmanager"
)

// Limits on what one payload may hold.
const (
	MaxPayloadBytes = 1 << 20
	MaxAlerts       = 1000
)

// Alert is one alert, normalized from either source.
type Alert struct {
	Source string
	// Rule is the Falco rule or the Alertmanager alertname.
	Rule string
	// ID is Falco's uuid or Alertmanager's fingerprint.
	ID string
	// Time is when it fired (Falco's time, Alertmanager's startsAt).
	Time time.Time
	// Priority is Falco's priority or the Alertmanager severity label.
	Priority string
	// Labels are Falco's output fields (strings) or the Alertmanager labels.
	Labels map[string]string
	// Namespace, Pod and Container name the pod the alert is about (Container may be "").
	Namespace, Pod, Container string
}

// PayloadError is a payload that cannot be read; its message says why (HTTP 400, or 413
// when TooLarge).
type PayloadError struct {
	Reason   string
	TooLarge bool
}

func (e *PayloadError) Error() string { return e.Reason }

func payloadErr(format string, args ...any) error {
	return &PayloadError{Reason: fmt.Sprintf(format, args...)}
}

// falcoPayload is Falcosidekick's webhook body (its types.FalcoPayload).
type falcoPayload struct {
	UUID         string         `json:"uuid"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         time.Time      `json:"time"`
	OutputFields map[string]any `json:"output_fields"`
	Source       string         `json:"source"`
	Tags         []string       `json:"tags"`
	Hostname     string         `json:"hostname"`
}

// ParseFalco reads a Falcosidekick webhook body: one alert.
func ParseFalco(r io.Reader) ([]Alert, error) {
	var p falcoPayload
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	if p.Rule == "" {
		return nil, payloadErr("not a Falco event: no rule")
	}
	a := Alert{Source: SourceFalco, Rule: p.Rule, ID: p.UUID, Time: p.Time, Priority: p.Priority, Labels: map[string]string{}}
	for k, v := range p.OutputFields {
		switch v := v.(type) {
		case string:
			a.Labels[k] = v
		case float64, bool:
			a.Labels[k] = fmt.Sprint(v)
		}
	}
	a.Namespace, a.Pod, a.Container = a.Labels["k8s.ns.name"], a.Labels["k8s.pod.name"], a.Labels["container.name"]
	return []Alert{a}, nil
}

// amPayload is Alertmanager's webhook body (version 4).
type amPayload struct {
	Version string `json:"version"`
	Status  string `json:"status"`
	Alerts  []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
		Fingerprint string            `json:"fingerprint"`
	} `json:"alerts"`
}

// ParseAlertmanager reads an Alertmanager webhook body: its firing alerts (resolved ones
// start nothing).
func ParseAlertmanager(r io.Reader) ([]Alert, error) {
	var p amPayload
	if err := decode(r, &p); err != nil {
		return nil, err
	}
	if p.Version != "4" {
		return nil, payloadErr("Alertmanager webhook version %q is not supported; version 4 is", p.Version)
	}
	if len(p.Alerts) > MaxAlerts {
		return nil, payloadErr("%d alerts in one payload, more than %d", len(p.Alerts), MaxAlerts)
	}
	var out []Alert
	for _, al := range p.Alerts {
		if al.Status != "firing" {
			continue
		}
		l := al.Labels
		if l == nil {
			l = map[string]string{}
		}
		if l["alertname"] == "" {
			return nil, payloadErr("an alert without the alertname label")
		}
		out = append(out, Alert{Source: SourceAlertmanager, Rule: l["alertname"], ID: al.Fingerprint, Time: al.StartsAt,
			Priority: l["severity"], Labels: l, Namespace: l["namespace"], Pod: l["pod"], Container: l["container"]})
	}
	return out, nil
}

// decode reads one JSON object of at most MaxPayloadBytes.
func decode(r io.Reader, v any) error {
	lr := &io.LimitedReader{R: r, N: MaxPayloadBytes + 1}
	dec := json.NewDecoder(lr)
	err := dec.Decode(v)
	if lr.N <= 0 {
		return &PayloadError{Reason: fmt.Sprintf("payload is larger than %d bytes", MaxPayloadBytes), TooLarge: true}
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return payloadErr("empty payload")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return payloadErr("payload is not JSON: it ends in the middle of a value")
	case errors.As(err, &syn):
		return payloadErr("payload is not JSON: %v at byte %d", syn, syn.Offset)
	case errors.As(err, &typ):
		return payloadErr("payload field %q: %v", typ.Field, typ)
	case err != nil:
		return payloadErr("payload: %v", err)
	}
	if dec.More() {
		return payloadErr("payload holds more than one JSON value")
	}
	return nil
}

// priorities orders Falco priorities and Alertmanager severities, most urgent first.
var priorities = []string{"emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug"}

// rank is the position of p in priorities (info and page are common severities); -1 when
// unknown.
func rank(p string) int {
	p = strings.ToLower(strings.TrimSpace(p))
	switch p {
	case "info":
		p = "informational"
	case "page":
		p = "critical"
	case "warn":
		p = "warning"
	}
	for i, q := range priorities {
		if q == p {
			return i
		}
	}
	return -1
}
