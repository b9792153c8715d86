//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/alert"
	"github.com/podcopy/podcopy/internal/collect"
	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

// receiverName is the chart's alert receiver (release podcopy).
const receiverName = "podcopy-agent-receiver"

// receiverClient is an HTTPS client of the alert receiver on loopback (the chart's CA) and
// its bearer token.
func receiverClient(t *testing.T) (base, token string, hc *http.Client) {
	t.Helper()
	local(t, "alert receiver (its port on this machine)")
	port, err := os.ReadFile(filepath.Join(state, "receiver-port"))
	if err != nil {
		t.Fatalf("the alert receiver is not deployed (hack/deploy.sh helm): %v", err)
	}
	tlsSec, err := client.CoreV1().Secrets("podcopy").Get(t.Context(), receiverName+"-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokSec, err := client.CoreV1().Secrets("podcopy").Get(t.Context(), receiverName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(tlsSec.Data["ca.crt"]) {
		t.Fatal("the receiver's ca.crt holds no certificate")
	}
	hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(hc.CloseIdleConnections)
	return "https://127.0.0.1:" + strings.TrimSpace(string(port)), string(tokSec.Data["token"]), hc
}

type receiverReply struct {
	Results []alert.Result `json:"results"`
	Reason  string         `json:"reason"`
}

func postAlert(t *testing.T, hc *http.Client, url, token, body string) (int, receiverReply) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out receiverReply
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("reply %q: %v", raw, err)
	}
	return resp.StatusCode, out
}

// recordedPayload is a payload recorded in the format its project documents, aimed at pod.
func recordedPayload(t *testing.T, file, ns, pod string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "internal", "alert", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("NAMESPACE", ns, "POD", pod).Replace(string(b))
}

// custodyOf reads and verifies the custody record of a collection in the analysis pod
// against the published keys.
func custodyOf(t *testing.T, st status.Status) custody.Record {
	t.Helper()
	dir := st.Destination[strings.Index(st.Destination, ":")+1:]
	env := mustRun(t, analysis(t), "cat", dir+"/"+custody.FileName)
	trust, err := custody.PublishedTrust(t.Context(), client, "podcopy", "podcopy-signing-keys", "podcopy-revocations")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := custody.Verify(t.Context(), []byte(env), trust)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// collectionsOf lists the published collections of a pod in the analysis pod.
func collectionsOf(t *testing.T, ns, pod string) []string {
	t.Helper()
	out, _ := run(t, analysis(t), "sh", "-c", "cd /collect/"+ns+"/"+pod+" 2>/dev/null && ls -1d */manifest.json 2>/dev/null || true")
	return strings.Fields(out)
}

// TestAlertReceiver: a recorded Falcosidekick payload, sent 50 times at once, and an
// Alertmanager payload each start exactly one collection of their pod, requested by the
// receiver's own ServiceAccount, with the alert in status, manifest and custody record and
// the pod's record beside the files; a wrong token and a malformed payload are refused
// with their reasons and start nothing.
func TestAlertReceiver(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	sourcePod(t, ns, "shell", imageBusybox, "mkdir -p /var/log/app && echo 'shell session' > /var/log/app/app.log && echo started")
	sourcePod(t, ns, "miner", imageBusybox, "mkdir -p /var/log/app && echo 'miner' > /var/log/app/app.log")
	base, token, hc := receiverClient(t)

	// Refused first: nothing may start from these.
	if code, out := postAlert(t, hc, base+alert.PathFalco, "not-the-token-0123456789", recordedPayload(t, "falcosidekick.json", ns, "shell")); code != http.StatusUnauthorized || !strings.Contains(out.Reason, "bearer token") {
		t.Fatalf("wrong token: %d %+v", code, out)
	}
	if code, out := postAlert(t, hc, base+alert.PathFalco, "", recordedPayload(t, "falcosidekick.json", ns, "shell")); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d %+v", code, out)
	}
	if code, out := postAlert(t, hc, base+alert.PathAlertmanager, token, `{"version":"4","alerts":[{"status":"firing","labels":{"alertname":`); code != http.StatusBadRequest || !strings.Contains(out.Reason, "not JSON") {
		t.Fatalf("malformed: %d %+v", code, out)
	}
	if code, out := postAlert(t, hc, base+alert.PathAlertmanager, token, `{"version":"4","alerts":[{"status":"firing","labels":{"namespace":"x"}}]}`); code != http.StatusBadRequest || !strings.Contains(out.Reason, "alertname") {
		t.Fatalf("no alertname: %d %+v", code, out)
	}
	if st, ok := getStatus(t, ns, "shell"); ok {
		t.Fatalf("a refused payload started something: %+v", st)
	}

	// A burst of 50 identical Falco alerts: one request, 49 duplicates.
	body := recordedPayload(t, "falcosidekick.json", ns, "shell")
	var mu sync.Mutex
	results := map[string]int{}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			code, out := postAlert(t, hc, base+alert.PathFalco, token, body)
			mu.Lock()
			defer mu.Unlock()
			if code != http.StatusOK || len(out.Results) != 1 {
				results[fmt.Sprintf("HTTP %d %s", code, out.Reason)]++
				return
			}
			results[out.Results[0].Result]++
		})
	}
	wg.Wait()
	if results[alert.ResultRequested] != 1 || results[alert.ResultDuplicate] != 49 {
		t.Fatalf("50 identical alerts: %v", results)
	}
	code, out := postAlert(t, hc, base+alert.PathAlertmanager, token, recordedPayload(t, "alertmanager.json", ns, "miner"))
	if code != http.StatusOK || len(out.Results) != 1 || out.Results[0].Result != alert.ResultRequested || out.Results[0].Profile != "compromised" {
		t.Fatalf("Alertmanager: %d %+v (its resolved alert must start nothing)", code, out)
	}

	receiverSA := "system:serviceaccount:podcopy:" + receiverName
	for _, tc := range []struct {
		pod, source, rule, id string
		records               []string
	}{
		{"shell", alert.SourceFalco, "Terminal shell in container", "3a8b6f4e-1d2c-4b5a-9e8f-7a6b5c4d3e2f", []string{"_pod/pod.json", "_pod/events.json", "_pod/logs/app.log"}},
		{"miner", alert.SourceAlertmanager, "ContainerCompromised", "c5f7b6a1d2e3f405", []string{"_pod/pod.json", "_pod/logs/app.log"}},
	} {
		st := waitFinal(t, ns, tc.pod, "")
		if st.Phase != status.Succeeded || st.RequestedBy != receiverSA || st.Alert == nil || st.Alert.Source != tc.source || st.Alert.Rule != tc.rule || st.Alert.ID != tc.id {
			t.Fatalf("%s: status %+v (alert %+v)", tc.pod, st, st.Alert)
		}
		m := readManifest(t, st)
		if m.Alert == nil || *m.Alert != *st.Alert || m.RequestedBy != receiverSA {
			t.Fatalf("%s: manifest alert %+v, requestedBy %q", tc.pod, m.Alert, m.RequestedBy)
		}
		var names []string
		for _, r := range m.Records {
			if r.Error != "" || r.SHA256 == "" {
				t.Fatalf("%s: record %+v", tc.pod, r)
			}
			names = append(names, r.Name)
		}
		if strings.Join(names, ",") != strings.Join(tc.records, ",") {
			t.Fatalf("%s: records %v, want %v", tc.pod, names, tc.records)
		}
		rec := custodyOf(t, st)
		if rec.Predicate.Alert == nil || *rec.Predicate.Alert != *st.Alert {
			t.Fatalf("%s: custody predicate alert %+v", tc.pod, rec.Predicate.Alert)
		}
		for _, r := range m.Records {
			if rec.Subjects[r.Name] != r.SHA256 {
				t.Fatalf("%s: record %s signed as %q, manifest %s", tc.pod, r.Name, rec.Subjects[r.Name], r.SHA256)
			}
		}
		if n := countEvents(t, ns, tc.pod, collect.ReasonStarted); n != 1 {
			t.Fatalf("%s: %d CollectionStarted events, want 1", tc.pod, n)
		}
		if got := collectionsOf(t, ns, tc.pod); len(got) != 1 {
			t.Fatalf("%s: collections %v, want exactly one", tc.pod, got)
		}
	}
	// The same alert again within the window: still one collection.
	if _, out := postAlert(t, hc, base+alert.PathFalco, token, body); out.Results[0].Result != alert.ResultDuplicate {
		t.Fatalf("a repeat within the window: %+v", out)
	}
}

// gracefulPod is a pod whose app keeps running on SIGTERM for its 30 s grace period, with a
// Secret in its environment (which its record must never hold).
func gracefulPod(ns, name, secretName string) *corev1.Pod {
	p := clustertest.SourcePod(ns, name, imageBusybox, "trap 'echo SIGTERM received, still serving' TERM\nmkdir -p /var/log/app\necho 'last words' > /var/log/app/app.log\necho serving")
	grace := int64(30)
	p.Spec.TerminationGracePeriodSeconds = &grace
	c := &p.Spec.Containers[0]
	// The shell must stay PID 1's handler, not exec sleep (which would take the signal).
	c.Command = []string{"/bin/sh", "-c", "trap 'echo SIGTERM received, still serving' TERM\nmkdir -p /var/log/app\necho 'last words' > /var/log/app/app.log\necho serving\ntouch /tmp/ready\nwhile true; do sleep 1; done"}
	c.Env = []corev1.EnvVar{{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secretName}, Key: "password"}}}}
	p.Annotations = map[string]string{
		request.AnnotationCollect:   "/var/log/app",
		request.AnnotationCollectOn: request.OnTermination,
		request.AnnotationInclude:   "spec,events,logs",
	}
	return p
}

// TestCollectOnTermination: a pod deleted with a 30 s grace period whose app keeps running
// on SIGTERM is collected before it goes, with its spec, events and log; the Secret in its
// environment appears nowhere in the collection.
func TestCollectOnTermination(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	secretValue := "s3cr3t-" + fmt.Sprint(time.Now().UnixNano())
	if _, err := client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		StringData: map[string]string{"password": secretValue}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), gracefulPod(ns, "doomed", "db"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := clustertest.WaitReady(t.Context(), client, ns, "doomed", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the armed request's Pending status", func(ctx context.Context) (bool, error) {
		st, ok := getStatus(t, ns, "doomed")
		return ok && st.Phase == status.Pending && strings.Contains(st.Message, "termination"), nil
	})
	deleted := time.Now()
	if err := client.CoreV1().Pods(ns).Delete(t.Context(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var st status.Status
	waitFor(t, 30*time.Second, "a final status within the grace period", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, "doomed", metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("the pod went before its collection ended: %w", err)
		}
		s, ok := status.Get(p)
		st = s
		return ok && s.Done(s.Request), nil
	})
	t.Logf("collected %s after the delete began", time.Since(deleted).Round(100*time.Millisecond))
	if st.Phase != status.Succeeded || st.Occasion != request.OnTermination || st.Files != 1 {
		t.Fatalf("status %+v", st)
	}
	m := readManifest(t, st)
	if m.Occasion != request.OnTermination || len(m.Records) != 3 {
		t.Fatalf("manifest occasion %q, records %+v", m.Occasion, m.Records)
	}
	dir := st.Destination[strings.Index(st.Destination, ":")+1:]
	a := analysis(t)
	if got := mustRun(t, a, "cat", dir+"/app/var/log/app/app.log"); got != "last words\n" {
		t.Fatalf("app.log %q", got)
	}
	if got := mustRun(t, a, "cat", dir+"/_pod/logs/app.log"); !strings.Contains(got, "serving") {
		t.Fatalf("the container's log %q", got)
	}
	spec := mustRun(t, a, "cat", dir+"/_pod/pod.json")
	var pod corev1.Pod
	if err := json.Unmarshal([]byte(spec), &pod); err != nil || pod.DeletionTimestamp == nil || len(pod.Status.ContainerStatuses) != 1 || pod.Status.ContainerStatuses[0].ContainerID == "" || pod.Status.ContainerStatuses[0].ImageID == "" {
		t.Fatalf("pod record: %v, %+v", err, pod.Status.ContainerStatuses)
	}
	if evs := mustRun(t, a, "cat", dir+"/_pod/events.json"); !strings.Contains(evs, `"reason": "Started"`) || !strings.Contains(evs, "doomed") {
		t.Fatalf("the events record does not hold the kubelet's Started event: %.2000s", evs)
	}
	if out, _ := run(t, a, "grep", "-rl", secretValue, dir); out != "" {
		t.Fatalf("the Secret's value is in %s", out)
	}
	// The pod is gone after its grace period; its collection stays.
	waitFor(t, time.Minute, "the pod's deletion", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(ctx, "doomed", metav1.GetOptions{})
		return err != nil, nil
	})
	if got := collectionsOf(t, ns, "doomed"); len(got) != 1 {
		t.Fatalf("collections %v", got)
	}
}

// TestCollectOnRestart: a container restarted by a failing liveness probe gets its
// volume's logs collected after the restart, with the previous container's log; the
// request waits (Pending) until then.
func TestCollectOnRestart(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	// The first instance passes its liveness probe for a while, then stops; later ones live.
	script := `mkdir -p /var/log/app
n=$(( $(cat /var/log/app/count 2>/dev/null || echo 0) + 1 ))
echo $n > /var/log/app/count
echo "instance $n started" >> /var/log/app/app.log
echo "stdout of instance $n"
touch /tmp/alive /tmp/ready
if [ $n = 1 ]; then sleep 8; echo "instance 1 stops answering"; rm /tmp/alive; fi
while true; do sleep 1; done`
	p := clustertest.SourcePod(ns, "flaky", imageBusybox, "")
	c := &p.Spec.Containers[0]
	c.Command = []string{"/bin/sh", "-c", script}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "logs", MountPath: "/var/log/app"}}
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/tmp/alive"}}},
		PeriodSeconds: 2, FailureThreshold: 1}
	p.Spec.Volumes = []corev1.Volume{{Name: "logs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p.Annotations = map[string]string{
		request.AnnotationCollect:   "/var/log/app",
		request.AnnotationCollectOn: request.OnRestart,
		request.AnnotationInclude:   "logs",
	}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the armed request's Pending status", func(ctx context.Context) (bool, error) {
		st, ok := getStatus(t, ns, "flaky")
		return ok && st.Phase == status.Pending && strings.Contains(st.Message, "restart"), nil
	})
	st := waitFinal(t, ns, "flaky", "")
	if st.Phase != status.Succeeded || st.Occasion != "restart-1" {
		t.Fatalf("status %+v", st)
	}
	dir := st.Destination[strings.Index(st.Destination, ":")+1:]
	a := analysis(t)
	log := mustRun(t, a, "cat", dir+"/app/var/log/app/app.log")
	if !strings.Contains(log, "instance 1 started") || !strings.Contains(log, "instance 2 started") {
		t.Fatalf("the volume's log after the restart: %q", log)
	}
	prev := mustRun(t, a, "cat", dir+"/_pod/logs/app.previous.log")
	if !strings.Contains(prev, "stdout of instance 1") || !strings.Contains(prev, "instance 1 stops answering") || strings.Contains(prev, "instance 2") {
		t.Fatalf("the previous container's log: %q", prev)
	}
	if cur := mustRun(t, a, "cat", dir+"/_pod/logs/app.log"); !strings.Contains(cur, "stdout of instance 2") {
		t.Fatalf("the current container's log: %q", cur)
	}
	m := readManifest(t, st)
	kinds := map[string]string{}
	for _, r := range m.Records {
		kinds[r.Name] = r.Kind
	}
	if kinds["_pod/logs/app.previous.log"] != "previous-log" || kinds["_pod/logs/app.log"] != "log" || m.Occasion != "restart-1" {
		t.Fatalf("manifest records %+v, occasion %q", m.Records, m.Occasion)
	}
}

// TestCollectSelector: collect -l over three pods, one of which lacks the file: two
// succeed, the command exits 1 and names the failure; ls -l and fetch -l cover the
// selected pods.
func TestCollectSelector(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	for _, name := range []string{"db-0", "db-1", "db-2"} {
		script := "mkdir -p /var/log/mysql && echo " + name + " > /var/log/mysql/slow.log"
		if name == "db-2" {
			script = "mkdir -p /var/log/mysql"
		}
		p := clustertest.SourcePod(ns, name, imageBusybox, script)
		p.Labels = map[string]string{"app": "mysql"}
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sourcePod(t, ns, "web", imageBusybox, "mkdir -p /var/log/mysql && echo web > /var/log/mysql/slow.log")
	for _, name := range []string{"db-0", "db-1", "db-2"} {
		if err := clustertest.WaitReady(t.Context(), client, ns, name, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	admin := kubeconfig
	out, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "collect", "-l", "app=mysql", "/var/log/mysql/slow.log", "--wait")
	if code != 1 || !strings.Contains(errOut, "1 of 3 collections failed") || !strings.Contains(errOut, ns+"/db-2[app]: Failed") || !strings.Contains(errOut, "no such file") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	for _, name := range []string{"db-0", "db-1"} {
		if !strings.Contains(out, ns+"/"+name+"[app]: Succeeded") {
			t.Fatalf("stdout lacks %s's success:\n%s", name, out)
		}
		if st, _ := getStatus(t, ns, name); st.Phase != status.Succeeded {
			t.Fatalf("%s: %+v", name, st)
		}
	}
	if st, ok := getStatus(t, ns, "web"); ok {
		t.Fatalf("a pod outside the selector was collected: %+v", st)
	}
	ls, _, code := kubectlPodcopy(t, admin, "-n", ns, "ls", "-l", "app=mysql")
	if code != 0 || !strings.Contains(ls, "db-0") || !strings.Contains(ls, "db-2") || strings.Contains(ls, "web") {
		t.Fatalf("ls -l: exit %d\n%s", code, ls)
	}
	dest := t.TempDir()
	_, errOut, code = kubectlPodcopy(t, admin, "-n", ns, "fetch", "-l", "app=mysql", "-o", dest)
	if code != 1 || !strings.Contains(errOut, "1 of 3 pods failed") || !strings.Contains(errOut, "db-2") {
		t.Fatalf("fetch -l: exit %d, %s", code, errOut)
	}
	for _, name := range []string{"db-0", "db-1"} {
		matches, _ := filepath.Glob(filepath.Join(dest, name, "*", "app", "var", "log", "mysql", "slow.log"))
		if len(matches) != 1 {
			t.Fatalf("fetch -l: %s not fetched into %s/%s", name, dest, name)
		}
		if b, _ := os.ReadFile(matches[0]); !bytes.Equal(b, []byte(name+"\n")) {
			t.Fatalf("fetched %s: %q", name, b)
		}
	}
}
