package alert

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

const token = "0123456789abcdef0123"

// payload is a recorded payload with its pod placeholders filled in.
func payload(t *testing.T, file, ns, pod string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("NAMESPACE", ns, "POD", pod).Replace(string(b))
}

func newReceiver(t *testing.T, pods ...string) (*Receiver, *fake.Clientset, *time.Time) {
	t.Helper()
	var objs []*corev1.Pod
	for _, p := range pods {
		objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: p, UID: types.UID("uid-" + p)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}})
	}
	client := fake.NewClientset()
	for _, o := range objs {
		if err := client.Tracker().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile("testdata/profiles.yaml")
	if err != nil {
		t.Fatal(err)
	}
	prof, err := ParseProfiles(data)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 13, 32, 0, 0, time.UTC)
	rc := &Receiver{Token: []byte(token), Profiles: func() (Profiles, error) { return prof, nil }, Client: client,
		Metrics: NewMetrics(prometheus.NewRegistry()), Now: func() time.Time { return now }}
	return rc, client, &now
}

func post(t *testing.T, h http.Handler, path, auth, body string) (int, response) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out response
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("response %q: %v", rec.Body.String(), err)
	}
	return rec.Code, out
}

// TestFalcoBurst: a recorded Falcosidekick payload sets the profile's request and the alert
// on the pod; 49 more of the same within the window start nothing new; after the window
// the next one asks again with a new trigger.
func TestFalcoBurst(t *testing.T) {
	t.Parallel()
	rc, client, now := newReceiver(t, "web")
	h := rc.Handler()
	body := payload(t, "falcosidekick.json", "ns", "web")
	results := map[string]int{}
	for range 50 {
		code, out := post(t, h, PathFalco, "Bearer "+token, body)
		if code != http.StatusOK || len(out.Results) != 1 {
			t.Fatalf("%d %+v", code, out)
		}
		results[out.Results[0].Result]++
	}
	if results[ResultRequested] != 1 || results[ResultDuplicate] != 49 {
		t.Fatalf("results %v", results)
	}
	pod, err := client.CoreV1().Pods("ns").Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := pod.Annotations
	if a[request.AnnotationCollect] != "/var/log,/tmp" || a[request.AnnotationInclude] != "spec,events,logs" || a[request.AnnotationContainer] != "app" || !strings.HasPrefix(a[request.AnnotationTrigger], "alert-") {
		t.Fatalf("annotations %v", a)
	}
	var al manifest.Alert
	if err := json.Unmarshal([]byte(a[request.AnnotationAlert]), &al); err != nil {
		t.Fatal(err)
	}
	if al != (manifest.Alert{Source: SourceFalco, Rule: "Terminal shell in container", ID: "3a8b6f4e-1d2c-4b5a-9e8f-7a6b5c4d3e2f",
		Time: "2026-12-02T13:31:56Z", Priority: "Notice", Profile: "shell-in-container"}) {
		t.Fatalf("alert record %+v", al)
	}
	first := a[request.AnnotationTrigger]
	*now = now.Add(DefaultDedupWindow)
	if _, out := post(t, h, PathFalco, "Bearer "+token, body); out.Results[0].Result != ResultRequested || out.Results[0].Trigger == first {
		t.Fatalf("after the window: %+v (first trigger %s)", out, first)
	}
}

// TestAlertmanager: the firing alert of a version 4 payload is acted on, the resolved one
// is not; an alert for a pod that does not exist says so.
func TestAlertmanager(t *testing.T) {
	t.Parallel()
	rc, client, _ := newReceiver(t, "db")
	code, out := post(t, rc.Handler(), PathAlertmanager, "Bearer "+token, payload(t, "alertmanager.json", "ns", "db"))
	if code != http.StatusOK || len(out.Results) != 1 || out.Results[0].Result != ResultRequested || out.Results[0].Profile != "compromised" {
		t.Fatalf("%d %+v", code, out)
	}
	pod, _ := client.CoreV1().Pods("ns").Get(t.Context(), "db", metav1.GetOptions{})
	if !strings.Contains(pod.Annotations[request.AnnotationAlert], `"id":"c5f7b6a1d2e3f405"`) {
		t.Fatalf("alert %s", pod.Annotations[request.AnnotationAlert])
	}
	_, out = post(t, rc.Handler(), PathAlertmanager, "Bearer "+token, payload(t, "alertmanager.json", "ns", "gone"))
	if out.Results[0].Result != ResultNoPod {
		t.Fatalf("missing pod: %+v", out)
	}
}

// TestRefused: a wrong or missing token, a malformed payload, the wrong version, another
// method: refused with a status code and a reason, nothing set.
func TestRefused(t *testing.T) {
	t.Parallel()
	rc, client, _ := newReceiver(t, "web")
	h := rc.Handler()
	good := payload(t, "falcosidekick.json", "ns", "web")
	tests := []struct {
		name, path, auth, body string
		code                   int
		reason                 string
	}{
		{"no token", PathFalco, "", good, http.StatusUnauthorized, "bearer token"},
		{"wrong token", PathFalco, "Bearer nope", good, http.StatusUnauthorized, "bearer token"},
		{"basic auth", PathFalco, "Basic " + token, good, http.StatusUnauthorized, "bearer token"},
		{"not json", PathFalco, "Bearer " + token, `{"rule": `, http.StatusBadRequest, "not JSON"},
		{"wrong type", PathFalco, "Bearer " + token, `{"rule": 5}`, http.StatusBadRequest, "rule"},
		{"no rule", PathFalco, "Bearer " + token, `{"output": "x"}`, http.StatusBadRequest, "no rule"},
		{"two values", PathFalco, "Bearer " + token, good + good, http.StatusBadRequest, "more than one"},
		{"version 3", PathAlertmanager, "Bearer " + token, `{"version":"3","alerts":[]}`, http.StatusBadRequest, "version"},
		{"too large", PathFalco, "Bearer " + token, `{"rule":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`, http.StatusRequestEntityTooLarge, "larger than"},
	}
	for _, tt := range tests {
		code, out := post(t, h, tt.path, tt.auth, tt.body)
		if code != tt.code || !strings.Contains(out.Reason, tt.reason) {
			t.Errorf("%s: %d %q, want %d with %q", tt.name, code, out.Reason, tt.code, tt.reason)
		}
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, PathFalco, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
	pod, _ := client.CoreV1().Pods("ns").Get(t.Context(), "web", metav1.GetOptions{})
	if len(pod.Annotations) != 0 {
		t.Fatalf("a refused payload set %v", pod.Annotations)
	}
}

// TestRateLimit: past the burst, further alerts (other pods) are refused as rate-limited and
// may ask again later.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	var pods []string
	for i := range 12 {
		pods = append(pods, "p"+string(rune('a'+i)))
	}
	rc, _, now := newReceiver(t, pods...)
	h := rc.Handler()
	got := map[string]int{}
	for _, p := range pods {
		_, out := post(t, h, PathFalco, "Bearer "+token, payload(t, "falcosidekick.json", "ns", p))
		got[out.Results[0].Result]++
	}
	if got[ResultRequested] != DefaultBurst || got[ResultRateLimited] != 2 {
		t.Fatalf("results %v", got)
	}
	*now = now.Add(time.Minute)
	if _, out := post(t, h, PathFalco, "Bearer "+token, payload(t, "falcosidekick.json", "ns", pods[11])); out.Results[0].Result != ResultRequested {
		t.Fatalf("after a minute: %+v", out)
	}
}

// TestProfiles: the file is checked whole, and matching honours source, rule, priority and
// labels.
func TestProfiles(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"profiles: [{name: a, collect: {paths: []}}]",
		"profiles: [{name: a, match: {source: splunk}, collect: {paths: [/tmp]}}]",
		"profiles: [{name: a, match: {minPriority: loud}, collect: {paths: [/tmp]}}]",
		"profiles: [{name: a, collect: {paths: [/tmp]}}, {name: a, collect: {paths: [/tmp]}}]",
		"profiles: [{name: a, collect: {paths: ['/a,/b']}}]",
		"dedupWindow: soon\nprofiles: []",
		"profiles: [{name: a, colect: {paths: [/tmp]}}]",
		"profiles: [{name: a, collect: {paths: [/tmp], for: 1h}}]",
		"profiles: [{name: a, collect: {paths: [/tmp], source: rsync}}]",
	} {
		if _, err := ParseProfiles([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	p, err := ParseProfiles([]byte("profiles: [{name: a, match: {minPriority: warning, labels: {k8s.ns.name: prod}}, collect: {paths: [/tmp]}}]"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseProfiles([]byte("profiles: [{name: f, collect: {paths: [/var/log], mode: follow, interval: 10s, for: 1h}}]"))
	if err != nil {
		t.Fatal(err)
	}
	ann := f.Profiles[0].Annotations(Alert{}, "t", "{}", time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC))
	if got := ann[request.AnnotationFollowUntil]; got == nil || *got != "2026-12-02T15:00:00Z" || *ann[request.AnnotationInterval] != "10s" {
		t.Fatalf("follow for 1h: %v", ann)
	}
	for _, tt := range []struct {
		a    Alert
		want bool
	}{
		{Alert{Priority: "Critical", Labels: map[string]string{"k8s.ns.name": "prod"}}, true},
		{Alert{Priority: "Warning", Labels: map[string]string{"k8s.ns.name": "prod"}}, true},
		{Alert{Priority: "Notice", Labels: map[string]string{"k8s.ns.name": "prod"}}, false},
		{Alert{Priority: "Critical", Labels: map[string]string{"k8s.ns.name": "dev"}}, false},
		{Alert{Priority: "", Labels: map[string]string{"k8s.ns.name": "prod"}}, false},
	} {
		if got := p.Match(tt.a) != nil; got != tt.want {
			t.Errorf("%+v: matched %v", tt.a, got)
		}
	}
}

// TestAlertKeepsWhatThePodChose: an alert never ends a running follow (refused, with why,
// the pod's request untouched) and never drops the pod's own podcopy/source or
// podcopy/destination; a follow that has ended may be replaced.
func TestAlertKeepsWhatThePodChose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		ann        map[string]string
		st         *status.Status
		wantResult string
		check      func(t *testing.T, a map[string]string)
	}{
		{name: "running follow", ann: map[string]string{request.AnnotationCollect: "/var/log/app.log", request.AnnotationMode: "follow", request.AnnotationRequestedBy: "alice"},
			st: &status.Status{Request: "r1", Phase: status.Running}, wantResult: ResultRefused,
			check: func(t *testing.T, a map[string]string) {
				if a[request.AnnotationCollect] != "/var/log/app.log" || a[request.AnnotationMode] != "follow" || a[request.AnnotationAlert] != "" {
					t.Errorf("the follow's request was touched: %v", a)
				}
			}},
		{name: "ended follow", ann: map[string]string{request.AnnotationCollect: "/var/log/app.log", request.AnnotationMode: "follow"},
			st: &status.Status{Request: "r1", Phase: status.Succeeded}, wantResult: ResultRequested,
			check: func(t *testing.T, a map[string]string) {
				if a[request.AnnotationCollect] != "/var/log,/tmp" || a[request.AnnotationMode] != "" {
					t.Errorf("the alert's request is not set: %v", a)
				}
			}},
		{name: "explicit source and destination", ann: map[string]string{request.AnnotationSource: "helper", request.AnnotationDestination: "analysis-1"},
			wantResult: ResultRequested,
			check: func(t *testing.T, a map[string]string) {
				if a[request.AnnotationSource] != "helper" || a[request.AnnotationDestination] != "analysis-1" || a[request.AnnotationCollect] != "/var/log,/tmp" {
					t.Errorf("the pod's own choices were dropped: %v", a)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc, client, _ := newReceiver(t, "web")
			pod, err := client.CoreV1().Pods("ns").Get(t.Context(), "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pod.Annotations = tt.ann
			if tt.st != nil {
				if tt.st.Phase != status.Running {
					tt.st.CompletionTime = "2026-12-02T13:00:00Z"
				}
				raw, _ := json.Marshal(tt.st)
				pod.Annotations[status.Annotation] = string(raw)
			}
			if _, err := client.CoreV1().Pods("ns").Update(t.Context(), pod, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			_, out := post(t, rc.Handler(), PathFalco, "Bearer "+token, payload(t, "falcosidekick.json", "ns", "web"))
			if len(out.Results) != 1 || out.Results[0].Result != tt.wantResult {
				t.Fatalf("results %+v, want %s", out.Results, tt.wantResult)
			}
			if tt.wantResult == ResultRefused && !strings.Contains(out.Results[0].Reason, "never ends a follow") {
				t.Errorf("reason %q", out.Results[0].Reason)
			}
			pod, err = client.CoreV1().Pods("ns").Get(t.Context(), "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, pod.Annotations)
		})
	}
}
