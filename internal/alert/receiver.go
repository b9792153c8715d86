package alert

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

// Webhook paths.
const (
	PathFalco        = "/v1/falco"
	PathAlertmanager = "/v1/alertmanager"
)

// Results of one alert (the response body and podcopy_receiver_alerts_total{result}).
const (
	ResultRequested   = "requested"
	ResultDuplicate   = "duplicate"
	ResultRateLimited = "rate-limited"
	ResultNoMatch     = "no-match"
	ResultNoPod       = "no-pod"
	ResultRefused     = "refused"
	ResultFailed      = "failed"
)

// Metrics of the receiver.
type Metrics struct {
	Alerts   *prometheus.CounterVec
	Payloads *prometheus.CounterVec
}

// NewMetrics registers the receiver's metrics in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcopy_receiver_alerts_total", Help: "Alerts received, by source and what was done.",
		}, []string{"source", "result"}),
		Payloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcopy_receiver_payloads_total", Help: "Webhook requests, by HTTP status code.",
		}, []string{"code"}),
	}
	reg.MustRegister(m.Alerts, m.Payloads)
	return m
}

// Receiver serves the webhooks.
type Receiver struct {
	// Token is the bearer token senders must present.
	Token []byte
	// Profiles returns the current profiles (reloaded from their file).
	Profiles func() (Profiles, error)
	Client   kubernetes.Interface
	// Namespaces the receiver may act in (empty: all).
	Namespaces []string
	Metrics    *Metrics
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu      sync.Mutex
	seen    map[string]time.Time // dedup key -> until
	limiter *rate.Limiter
	limit   [2]int // the limiter's ratePerMinute and burst
}

// MaxDedupEntries bounds the dedup memory; past it the oldest windows are dropped first.
const MaxDedupEntries = 100000

// Result is what was done with one alert.
type Result struct {
	Source string `json:"source"`
	Rule   string `json:"rule"`
	Pod    string `json:"pod,omitempty"`
	// Profile is the profile that matched.
	Profile string `json:"profile,omitempty"`
	Result  string `json:"result"`
	Reason  string `json:"reason,omitempty"`
	// Trigger is the podcopy/trigger set on the pod (requested, duplicate).
	Trigger string `json:"trigger,omitempty"`
}

type response struct {
	Results []Result `json:"results,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

// Handler routes the webhooks (and /healthz).
func (rc *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PathFalco, func(w http.ResponseWriter, r *http.Request) { rc.serve(w, r, ParseFalco) })
	mux.HandleFunc(PathAlertmanager, func(w http.ResponseWriter, r *http.Request) { rc.serve(w, r, ParseAlertmanager) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

func (rc *Receiver) reply(w http.ResponseWriter, code int, body response) {
	rc.Metrics.Payloads.WithLabelValues(fmt.Sprint(code)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="podcopy-receiver"`)
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request, parse func(io.Reader) ([]Alert, error)) {
	log := logr.FromContextOrDiscard(r.Context())
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		rc.reply(w, http.StatusMethodNotAllowed, response{Reason: "use POST"})
		return
	}
	if !rc.authorized(r) {
		log.Info("webhook refused: bad or missing bearer token", "remote", r.RemoteAddr)
		rc.reply(w, http.StatusUnauthorized, response{Reason: "missing or wrong bearer token (Authorization: Bearer <token from the receiver's Secret>)"})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			rc.reply(w, http.StatusUnsupportedMediaType, response{Reason: fmt.Sprintf("Content-Type %q: send application/json", ct)})
			return
		}
	}
	alerts, err := parse(http.MaxBytesReader(w, r.Body, MaxPayloadBytes+1))
	if err != nil {
		code := http.StatusBadRequest
		if pe := (*PayloadError)(nil); errors.As(err, &pe) && pe.TooLarge {
			code = http.StatusRequestEntityTooLarge
		}
		log.Info("webhook refused: bad payload", "path", r.URL.Path, "reason", err.Error())
		rc.reply(w, code, response{Reason: err.Error()})
		return
	}
	profiles, err := rc.Profiles()
	if err != nil {
		log.Error(err, "profiles cannot be read")
		rc.reply(w, http.StatusServiceUnavailable, response{Reason: "the receiver's profiles cannot be read: " + err.Error()})
		return
	}
	var res []Result
	for _, a := range alerts {
		out := rc.handle(r.Context(), profiles, a)
		rc.Metrics.Alerts.WithLabelValues(a.Source, out.Result).Inc()
		log.Info("alert", "source", a.Source, "rule", a.Rule, "id", a.ID, "pod", out.Pod, "profile", out.Profile, "result", out.Result, "reason", out.Reason)
		res = append(res, out)
	}
	rc.reply(w, http.StatusOK, response{Results: res})
}

// authorized compares the bearer token in constant time.
func (rc *Receiver) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && len(rc.Token) > 0 && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), rc.Token) == 1
}

func (rc *Receiver) now() time.Time {
	if rc.Now != nil {
		return rc.Now()
	}
	return time.Now()
}

// handle matches one alert and, when a profile matches, requests its collection.
func (rc *Receiver) handle(ctx context.Context, profiles Profiles, a Alert) Result {
	res := Result{Source: a.Source, Rule: a.Rule}
	if a.Namespace == "" || a.Pod == "" {
		res.Result, res.Reason = ResultNoPod, "the alert names no pod (Falco: k8s.ns.name and k8s.pod.name; Alertmanager: the namespace and pod labels)"
		return res
	}
	res.Pod = a.Namespace + "/" + a.Pod
	pr := profiles.Match(a)
	if pr == nil {
		res.Result, res.Reason = ResultNoMatch, fmt.Sprintf("no profile matches source %q, rule %q, priority %q and the alert's labels; the receiver's profiles are [%s]", a.Source, a.Rule, a.Priority, profiles.names())
		if profiles.Loaded != "" {
			res.Reason += " (" + profiles.Loaded + "; a changed profiles ConfigMap reaches the receiver within about a minute or two)"
		}
		return res
	}
	res.Profile = pr.Name
	if len(rc.Namespaces) > 0 && !slices.Contains(rc.Namespaces, a.Namespace) {
		res.Result, res.Reason = ResultRefused, fmt.Sprintf("namespace %s is not one the receiver may act in", a.Namespace)
		return res
	}
	now := rc.now()
	window := profiles.DedupWindow.Duration
	key := pr.Name + "\x00" + a.Rule + "\x00" + res.Pod
	sum := sha256.Sum256([]byte(key))
	// The trigger is the same for every alert of this profile, rule and pod in one window:
	// a restarted receiver that acts again in the window asks for the same request, which
	// the agent has already run.
	res.Trigger = fmt.Sprintf("alert-%s-%d", hex.EncodeToString(sum[:6]), now.Truncate(window).Unix())
	if !rc.claim(key, now, window) {
		res.Result, res.Reason = ResultDuplicate, fmt.Sprintf("this profile, rule and pod already started a collection within dedupWindow %s", window)
		return res
	}
	if !rc.allowed(profiles) {
		rc.release(key)
		res.Result, res.Reason = ResultRateLimited, fmt.Sprintf("more than ratePerMinute %d collections (burst %d)", profiles.RatePerMinute, profiles.Burst)
		return res
	}
	if err := rc.request(ctx, a, pr, res.Trigger); err != nil {
		rc.release(key)
		res.Result, res.Reason = ResultFailed, err.Error()
		var busy *busyError
		switch {
		case apierrors.IsNotFound(err):
			res.Result, res.Reason = ResultNoPod, fmt.Sprintf("pod %s does not exist", res.Pod)
		case errors.As(err, &busy):
			res.Result = ResultRefused
		}
		return res
	}
	res.Result = ResultRequested
	return res
}

// claim marks key as acted on until now+window, or reports false when it already is.
func (rc *Receiver) claim(key string, now time.Time, window time.Duration) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.seen == nil {
		rc.seen = map[string]time.Time{}
	}
	if until, ok := rc.seen[key]; ok && now.Before(until) {
		return false
	}
	if len(rc.seen) >= MaxDedupEntries {
		for k, until := range rc.seen {
			if !now.Before(until) {
				delete(rc.seen, k)
			}
		}
		for k := range rc.seen { // still full: forget arbitrary entries (their triggers still dedup at the agent)
			if len(rc.seen) < MaxDedupEntries {
				break
			}
			delete(rc.seen, k)
		}
	}
	rc.seen[key] = now.Add(window)
	return true
}

func (rc *Receiver) release(key string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	delete(rc.seen, key)
}

// allowed takes one token of the rate limit (rebuilt when the profiles change it).
func (rc *Receiver) allowed(p Profiles) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.limiter == nil || rc.limit != [2]int{p.RatePerMinute, p.Burst} {
		rc.limiter = rate.NewLimiter(rate.Limit(float64(p.RatePerMinute)/60), p.Burst)
		rc.limit = [2]int{p.RatePerMinute, p.Burst}
	}
	return rc.limiter.AllowN(rc.now(), 1)
}

// request sets the profile's request annotations on the alert's pod, with the pod's UID
// as a precondition (a pod recreated under the same name is not the one the alert saw).
func (rc *Receiver) request(ctx context.Context, a Alert, pr *Profile, trigger string) error {
	pods := rc.Client.CoreV1().Pods(a.Namespace)
	pod, err := pods.Get(ctx, a.Pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	record := manifest.Alert{Source: a.Source, Rule: manifest.Truncate(a.Rule, 512), ID: manifest.Truncate(a.ID, 128),
		Priority: manifest.Truncate(a.Priority, 64), Profile: pr.Name}
	if !a.Time.IsZero() {
		record.Time = a.Time.UTC().Format(time.RFC3339)
	}
	raw, err := json.Marshal(record)
	if err != nil {
		return err
	}
	if len(raw) > request.MaxAlertBytes {
		return fmt.Errorf("the alert record is %d bytes, more than %d", len(raw), request.MaxAlertBytes)
	}
	if why := following(pod); why != "" {
		return &busyError{reason: why}
	}
	ann := pr.Annotations(a, trigger, string(raw), rc.now())
	// The pod's own choice of how it is read stays: the profile's source applies only to a
	// pod that made none.
	if pod.Annotations[request.AnnotationSource] != "" {
		delete(ann, request.AnnotationSource)
	}
	if ann[request.AnnotationContainer] != nil && !hasContainer(pod.Spec.Containers, *ann[request.AnnotationContainer]) {
		ann[request.AnnotationContainer] = nil // Falco's container name is the runtime's; fall back to the pod's default
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID, "annotations": ann}})
	if err != nil {
		return err
	}
	_, err = pods.Patch(ctx, a.Pod, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "podcopy-receiver"})
	if err != nil {
		return fmt.Errorf("setting the request on pod %s/%s: %s", a.Namespace, a.Pod, status.Printable(err.Error()))
	}
	return nil
}

// busyError: the pod's request may not be replaced by an alert (a running follow).
type busyError struct{ reason string }

func (e *busyError) Error() string { return e.reason }

// following says why an alert may not replace pod's request: it follows files now (the
// follow would end, and whoever started it would lose the harvest). "" when it does not.
func following(pod *corev1.Pod) string {
	a := pod.Annotations
	if a[request.AnnotationCollect] == "" || a[request.AnnotationMode] != string(request.ModeFollow) {
		return ""
	}
	if st, ok := status.Get(pod); ok && st.Done(st.Request) {
		return "" // ended (stopped, capped or refused): nothing runs to end
	}
	return fmt.Sprintf("pod %s/%s is following %s (podcopy/mode=follow, requested by %s); an alert never ends a follow: stop it (kubectl podcopy stop) or collect the alert's paths with another request",
		pod.Namespace, pod.Name, status.Printable(a[request.AnnotationCollect]), status.Printable(orUnknown(a[request.AnnotationRequestedBy])))
}

func orUnknown(s string) string {
	if s == "" {
		return "an unrecorded user"
	}
	return s
}

func hasContainer(cs []corev1.Container, name string) bool {
	return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == name })
}
