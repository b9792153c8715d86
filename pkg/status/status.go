// Package status reads and writes the podcopy/status annotation (SPEC §2).
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/pkg/manifest"
)

// Annotation is the key only the agent writes.
const Annotation = "podcopy/status"

// Phase of a request.
type Phase string

// Phases of SPEC §2.
const (
	Pending   Phase = "Pending"
	Running   Phase = "Running"
	Succeeded Phase = "Succeeded"
	Failed    Phase = "Failed"
	Rejected  Phase = "Rejected"
)

// Status is the JSON value of the annotation.
type Status struct {
	Request        string `json:"request"`
	Phase          Phase  `json:"phase"`
	Collection     string `json:"collection,omitempty"`
	Files          int    `json:"files"`
	Bytes          int64  `json:"bytes"`
	Skipped        int    `json:"skipped"`
	Destination    string `json:"destination,omitempty"`
	Message        string `json:"message,omitempty"`
	StartTime      string `json:"startTime,omitempty"`
	CompletionTime string `json:"completionTime,omitempty"`
	// Attempt is the attempt of a once collection (1 for the first; SPEC §5 retry.attempts).
	Attempt int `json:"attempt,omitempty"`
	// NextAttemptTime (RFC 3339), while Running after a transient failure: when the next
	// attempt is due (retry.attempts' backoff). Any agent honours it, a restarted one too.
	NextAttemptTime string `json:"nextAttemptTime,omitempty"`
	// ExpectedBytes is the size of the collection when it is known early (one file), so a
	// client can draw progress while Running.
	ExpectedBytes int64 `json:"expectedBytes,omitempty"`
	// RequestedBy is who set the request (podcopy/requested-by, written by admission).
	RequestedBy string `json:"requestedBy,omitempty"`
	// RequestOrigin is podcopy/request-origin: "creation" (the request came with the pod) or
	// "update".
	RequestOrigin string `json:"requestOrigin,omitempty"`
	// Reason is a machine-readable token beside Message (package failure; SPEC §9).
	Reason string `json:"reason,omitempty"`
	// ManifestSHA256 is the hex SHA-256 of the collection's manifest.json as the agent wrote
	// it: readers compare the manifest they read against it (SPEC §9).
	ManifestSHA256 string `json:"manifestSHA256,omitempty"`
	// CustodyKeyID is the id of the key that signed the collection's custody record
	// (custody.intoto.json beside the manifest); empty when it is unsigned.
	CustodyKeyID string `json:"custodyKeyID,omitempty"`
	// Bucket is the collection's prefix in the bucket ("s3://<bucket>/<ns>/<pod>/<id>/") when
	// it is written there (destination.mode bucket or both).
	Bucket string `json:"bucket,omitempty"`
	// RetentionMode, RetainUntil and LegalHold are the Object Lock every object of the
	// collection carries in the bucket.
	RetentionMode string `json:"retentionMode,omitempty"`
	RetainUntil   string `json:"retainUntil,omitempty"`
	LegalHold     bool   `json:"legalHold,omitempty"`
	// Alert is the alert the request answers (podcopy/alert, set by the alert receiver).
	Alert *manifest.Alert `json:"alert,omitempty"`
	// Occasion is what started a deferred request (podcopy/collect-on): "termination" or
	// "restart-N".
	Occasion string `json:"occasion,omitempty"`
}

// Printable returns s with every control character (C0, DEL, C1), bidirectional override
// and invalid UTF-8 byte escaped as \xNN or \uNNNN, so text that came from a container or a
// pod's annotations cannot drive the terminal that prints it. Everything else is kept.
func Printable(s string) string {
	clean := true
	for i, r := range s {
		if r == utf8.RuneError || unsafeRune(r) {
			_, n := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || n == 1 || unsafeRune(r) {
				clean = false
				break
			}
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r < 0x100 && unsafeRune(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unsafeRune(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f
}

// Get returns the pod's status, or false when it has none (or an unreadable one).
func Get(pod *corev1.Pod) (Status, bool) {
	raw, ok := pod.Annotations[Annotation]
	if !ok {
		return Status{}, false
	}
	var s Status
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return Status{}, false
	}
	return s, true
}

// Done reports whether s is a final outcome of request id, so it must not run again.
func (s Status) Done(id string) bool {
	if s.Request != id {
		return false
	}
	switch s.Phase {
	case Succeeded, Failed, Rejected:
		return true
	}
	return false
}

// Writer patches the status onto pods.
type Writer interface {
	Write(ctx context.Context, pod *corev1.Pod, s Status) error
}

// PatchWriter writes with a JSON merge patch that touches only the status annotation, and
// only while the pod is the same object (UID precondition).
type PatchWriter struct{ Client kubernetes.Interface }

// writeTimeout bounds one status patch: the API client has no timeout of its own, and a
// stalled connection must not hold a worker or a retry loop.
const writeTimeout = 30 * time.Second

// Write implements Writer.
func (w PatchWriter) Write(ctx context.Context, pod *corev1.Pod, s Status) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	s.Message = Printable(s.Message) // it quotes what containers and annotations said
	val, err := json.Marshal(s)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":         pod.UID,
		"annotations": map[string]string{Annotation: string(val)},
	}})
	if err != nil {
		return err
	}
	_, err = w.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "podcopy-agent"})
	if err != nil {
		return fmt.Errorf("patching %s on %s/%s: %w", Annotation, pod.Namespace, pod.Name, err)
	}
	return nil
}
