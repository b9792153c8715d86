//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/status"
)

// collectOnce asks for paths on pod and waits for its final status (Succeeded required).
func collectOnce(t *testing.T, ns, pod, paths string) status.Status {
	t.Helper()
	before, _ := getStatus(t, ns, pod)
	annotate(t, ns, pod, map[string]string{"podcopy/collect": paths, "podcopy/mode": "once", "podcopy/trigger": time.Now().Format(time.RFC3339Nano)})
	st := waitFinal(t, ns, pod, before.Request)
	if st.Phase != status.Succeeded {
		t.Fatalf("collect %s on %s/%s: %+v", paths, ns, pod, st)
	}
	return st
}

// collectionDir is where a status says its collection is in the analysis pod.
func collectionDir(st status.Status) string {
	return st.Destination[strings.Index(st.Destination, ":")+1:]
}

// TestCustodyBindings (issue 33): every attack on a collection in the analysis pod fails,
// naming its cause: the replay of an older collection of the same pod, the replay of another
// pod's collection, a file planted beside the signed ones, and an analysis pod whose
// sha256sum says OK to anything. Not parallel: it replaces sha256sum in the shared analysis
// pod (and puts it back).
func TestCustodyBindings(t *testing.T) {
	ns := namespace(t)
	sourcePod(t, ns, "app", imageBusybox, `mkdir -p /var/log/c && echo benign > /var/log/c/a.log`)
	sourcePod(t, ns, "other", imageBusybox, `mkdir -p /var/log/c && echo other-pod > /var/log/c/a.log`)
	src := exec.Target{Namespace: ns, Pod: "app", Container: "app"}
	older := collectOnce(t, ns, "app", "/var/log/c/a.log")
	mustRun(t, src, "sh", "-c", "echo incident >> /var/log/c/a.log")
	incident := collectOnce(t, ns, "app", "/var/log/c")
	another := collectOnce(t, ns, "other", "/var/log/c")
	an := analysis(t)
	dir := collectionDir(incident)
	backup := "/tmp/" + ns + "-incident"
	mustRun(t, an, "cp", "-a", dir, backup)
	t.Cleanup(func() {
		_ = executor.Exec(cleanupContext(t), exec.Request{Target: an, Command: []string{"rm", "-rf", backup}, Stdout: io.Discard, Stderr: io.Discard})
	})
	restore := func() { mustRun(t, an, "sh", "-c", `rm -rf "$1" && cp -a "$2" "$1"`, "sh", dir, backup) }
	admin := kubeconfig
	if out, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "verify", "app"); code != 0 || !strings.Contains(out, "custody record: collection "+incident.Collection+" of pod "+ns+"/app") {
		t.Fatalf("verify of the genuine collection: exit %d\n%s%s", code, out, errOut)
	}

	for _, tc := range []struct {
		name, from, want string
	}{
		{"an older collection of the same pod", collectionDir(older), "the record is of collection \"" + older.Collection + "\", not \"" + incident.Collection + "\""},
		{"another pod's collection", collectionDir(another), "the record is of collection \"" + another.Collection + "\""},
	} {
		// Someone with exec into the analysis pod copies a complete, genuine collection
		// (files, manifest.json, custody.intoto.json) over the incident's.
		mustRun(t, an, "sh", "-c", `rm -rf "$1"/* && cp -a "$2"/. "$1"/`, "sh", dir, tc.from)
		for _, cmd := range [][]string{{"verify", "app"}, {"fetch", "app", "-o", t.TempDir()}} {
			_, errOut, code := kubectlPodcopy(t, admin, append([]string{"-n", ns}, cmd...)...)
			if code == 0 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "BINDING") {
				t.Fatalf("%s replayed, %s: exit %d, want %q in\n%s", tc.name, cmd[0], code, tc.want, errOut)
			}
			t.Logf("%s replayed, %s: %s", tc.name, cmd[0], strings.TrimSpace(errOut))
		}
		restore()
	}

	// A file planted beside the signed ones is reported in place (hashed here, listed).
	mustRun(t, an, "sh", "-c", `echo planted > "$1"/app/var/log/c/planted.log`, "sh", dir)
	if _, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "verify", "app"); code == 0 || !strings.Contains(errOut, "EXTRA    app/var/log/c/planted.log") {
		t.Fatalf("a planted file in place: exit %d\n%s", code, errOut)
	} else {
		t.Logf("planted file: %s", strings.TrimSpace(errOut))
	}
	restore()

	// The analysis pod's sha256sum replaced by one that says OK to anything, and a byte of the
	// evidence changed: verify hashes the bytes where the user is and names the file.
	// The file exec finds on PATH (busybox's shell may run applets itself; exec does not).
	sum := strings.TrimSpace(mustRun(t, an, "sh", "-c", `IFS=:; for d in $PATH; do [ -e "$d/sha256sum" ] && { echo "$d/sha256sum"; exit 0; }; done; exit 1`))
	mustRun(t, an, "sh", "-c", `cp -a "$1" /tmp/sha256sum.real && rm -f "$1" && printf '#!/bin/sh\ncat >/dev/null 2>&1\necho "$2: OK"\n' > "$1" && chmod +x "$1"`, "sh", sum)
	t.Cleanup(func() { // t.Context() is done by now: the shared analysis pod must get its sha256sum back
		err := executor.Exec(cleanupContext(t), exec.Request{Target: an, Command: []string{"sh", "-c", `rm -f "$1" && cp -a /tmp/sha256sum.real "$1" && rm -f /tmp/sha256sum.real`, "sh", sum}, Stdout: io.Discard, Stderr: io.Discard})
		if err != nil {
			t.Errorf("putting the analysis pod's sha256sum back: %v", err)
		}
	})
	mustRun(t, an, "sh", "-c", `printf X | dd of="$1" bs=1 seek=0 conv=notrunc 2>/dev/null`, "sh", dir+"/app/var/log/c/a.log")
	if _, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "verify", "app"); code == 0 || !strings.Contains(errOut, "MISMATCH /var/log/c/a.log") {
		t.Fatalf("verify with a lying sha256sum: exit %d\n%s", code, errOut)
	} else {
		t.Logf("lying sha256sum: %s", strings.TrimSpace(errOut))
	}
	restore()

	// Offline: a fetched replay is refused for the directory's collection id, and --expect
	// names the pod it must be of.
	fetched := t.TempDir()
	if _, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "fetch", "app", "-o", fetched); code != 0 {
		t.Fatalf("fetch: %s", errOut)
	}
	pems, _, _ := kubectlPodcopy(t, admin, "key")
	keyFile := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(keyFile, []byte(pems), 0o644); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(fetched, incident.Collection)
	if out, errOut, code := kubectlPodcopy(t, nowhereKubeconfig(t), "verify", local, "--key", keyFile, "--expect", ns+"/app"); code != 0 || !strings.Contains(out, "of pod "+ns+"/app") {
		t.Fatalf("offline verify: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := kubectlPodcopy(t, nowhereKubeconfig(t), "verify", local, "--key", keyFile, "--expect", ns+"/other"); code == 0 || !strings.Contains(errOut, "is of pod "+ns+"/app, not "+ns+"/other") {
		t.Fatalf("offline verify expecting another pod: exit %d\n%s", code, errOut)
	}
}

// TestCustodyBucketAttacks (issue 33): in the locked bucket, a genuine older collection
// replayed as new versions (delete markers over the originals) is named as tampering and as
// another collection's record; a followed file whose last two segments and records are
// hidden behind delete markers is reported, its closing record naming where it ended.
func TestCustodyBucketAttacks(t *testing.T) {
	t.Parallel()
	store := evidence(t)
	ns := fixedNamespace(t, "e2e-custody")
	sourcePod(t, ns, "app", imageBusybox, `mkdir -p /var/log/c && echo benign > /var/log/c/a.log`)
	src := exec.Target{Namespace: ns, Pod: "app", Container: "app"}
	older := collectOnce(t, ns, "app", "/var/log/c/a.log")
	mustRun(t, src, "sh", "-c", "echo incident >> /var/log/c/a.log")
	incident := collectOnce(t, ns, "app", "/var/log/c/a.log")
	env, admin := store.env(t), kubeconfig
	if out, errOut, code := kubectlPodcopyEnv(t, env, admin, "verify", incident.Bucket); code != 0 || !strings.Contains(out, "verified 1 files") {
		t.Fatalf("verify of the genuine collection: exit %d\n%s%s", code, out, errOut)
	}
	oldPrefix := strings.TrimPrefix(older.Bucket, "s3://"+store.bucket+"/")
	newPrefix := strings.TrimPrefix(incident.Bucket, "s3://"+store.bucket+"/")
	// Replay: every object of the older collection written as a new version of the
	// incident's key; Object Lock keeps the originals, so readers of the latest are misled.
	// (a.log is a small file: a member of the collection's bundle, contract §3.)
	for _, k := range []string{"_bundles/000001.tar", "manifest.json", custody.FileName} {
		if _, err := store.client.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(newPrefix + k),
			Body: strings.NewReader(string(store.get(t, oldPrefix+k)))}); err != nil {
			t.Fatal(err)
		}
	}
	// The agent's own record (the oldest version) is read and binds the incident; every
	// replayed version is named.
	for _, cmd := range [][]string{{"verify", incident.Bucket}, {"fetch", incident.Bucket, "-o", t.TempDir()}} {
		_, errOut, code := kubectlPodcopyEnv(t, env, admin, cmd...)
		if code == 0 || !strings.Contains(errOut, "RECORD   of collection "+incident.Collection) || !strings.Contains(errOut, "TAMPERED custody.intoto.json has 2 versions") ||
			!strings.Contains(errOut, "TAMPERED _bundles/000001.tar: version") || !strings.Contains(errOut, "TAMPERED /var/log/c/a.log (in _bundles/000001.tar): changed in version") ||
			!strings.Contains(errOut, "TAMPERED manifest.json: version") {
			t.Fatalf("replayed versions, %s: exit %d\n%s", cmd[0], code, errOut)
		}
		t.Logf("replayed versions, %s: %s", cmd[0], strings.TrimSpace(errOut))
	}
	// A delete marker over the replayed record: the agent's record is still the one read, and
	// the marker is named.
	for _, k := range []string{custody.FileName} {
		if _, err := store.client.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(newPrefix + k)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, errOut, code := kubectlPodcopyEnv(t, env, admin, "verify", incident.Bucket); code == 0 || !strings.Contains(errOut, "TAMPERED custody.intoto.json has 3 versions and delete markers") || !strings.Contains(errOut, "RECORD   of collection "+incident.Collection) {
		t.Fatalf("delete markers over the record: exit %d\n%s", code, errOut)
	} else {
		t.Logf("delete marker over the record: %s", strings.TrimSpace(errOut))
	}

	// A followed file into the bucket, stopped (its closing record is written), then its
	// last two segments and their records hidden behind delete markers.
	annotate(t, ns, "app", map[string]string{"podcopy/collect": "/var/log/c/f.log", "podcopy/mode": "follow", "podcopy/interval": "5s"})
	for i := 0; i < 4; i++ { // each line harvested before the next: a segment each
		mustRun(t, src, "sh", "-c", "echo line >> /var/log/c/f.log")
		want := int64(5 * (i + 1))
		waitFor(t, time.Minute, "the follow harvests", func(ctx context.Context) (bool, error) {
			st, _ := getStatus(t, ns, "app")
			return st.Collection == "follow" && st.Bytes >= want, nil
		})
	}
	if _, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "stop", "app"); code != 0 {
		t.Fatalf("stop: %s", errOut)
	}
	waitFor(t, time.Minute, "the follow to stop", func(ctx context.Context) (bool, error) {
		st, _ := getStatus(t, ns, "app")
		return st.Collection == "follow" && st.Phase == status.Succeeded, nil
	})
	pod, err := client.CoreV1().Pods(ns).Get(t.Context(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prefix := ns + "/app/follow/app/var/log/c/f.log/" + string(pod.UID) + "/"
	chain := "s3://" + store.bucket + "/" + prefix
	var keys []string
	waitFor(t, 30*time.Second, "the closing record", func(ctx context.Context) (bool, error) {
		list, err := store.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(store.bucket), Prefix: aws.String(prefix)})
		if err != nil {
			return false, err
		}
		keys = keys[:0]
		closed := false
		for _, o := range list.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			keys = append(keys, k)
			closed = closed || strings.HasSuffix(k, ".end.intoto.json")
		}
		return closed, nil
	})
	if out, errOut, code := kubectlPodcopyEnv(t, env, admin, "verify", chain); code != 0 || !strings.Contains(out, "closing record") {
		t.Fatalf("verify %s: exit %d\n%s%s", chain, code, out, errOut)
	} else {
		t.Logf("verify the closed chain: %s", strings.TrimSpace(out))
	}
	var segs []string
	for _, k := range keys {
		if strings.HasSuffix(k, ".seg") {
			segs = append(segs, strings.TrimSuffix(k, ".seg"))
		}
	}
	slices.Sort(segs)
	if len(segs) < 3 {
		t.Fatalf("%d segments (%v): want at least 3", len(segs), keys)
	}
	for _, seq := range segs[len(segs)-2:] {
		for _, k := range []string{seq + ".seg", seq + ".intoto.json"} {
			if _, err := store.client.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(prefix + k)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, errOut, code := kubectlPodcopyEnv(t, env, admin, "verify", chain)
	if code == 0 || strings.Count(errOut, "a delete marker hides its record") != 2 || strings.Count(errOut, ".seg is not the recorded version") != 2 {
		t.Fatalf("verify after cutting the tail: exit %d\n%s", code, errOut)
	}
	t.Logf("verify after cutting the tail: %s", strings.TrimSpace(errOut))
}

// TestConsoleBounds (issue 33): the console refuses a smuggled collection id (one that would
// name another namespace's collection), and lists a collection whose planted record is 60 MiB
// as refused, saying why, while a collection runs: the agent stays up.
func TestConsoleBounds(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	victim := namespace(t)
	sourcePod(t, ns, "web", imageBusybox, `mkdir -p /var/log/w && echo mine > /var/log/w/a.log`)
	sourcePod(t, victim, "web", imageBusybox, `mkdir -p /var/log/w && echo secret > /var/log/w/a.log && head -c 52428800 /dev/urandom > /var/log/w/big.bin`)
	mine := collectOnce(t, ns, "web", "/var/log/w/a.log")
	theirs := collectOnce(t, victim, "web", "/var/log/w/a.log")
	readPods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}
	execPods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}}
	bind(t, ns, "e2e-reader", rbacv1.Subject{Kind: "ServiceAccount", Name: "reader", Namespace: ns}, readPods)
	token := saToken(t, ns, "reader", readPods, execPods)
	base := shellURL(t)
	get := func(route string, q url.Values) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"api/v1/console/"+route+"?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}
	waitFor(t, 30*time.Second, "the reader's RBAC", func(context.Context) (bool, error) {
		code, _ := get("collection", url.Values{"namespace": {ns}, "pod": {"web"}, "id": {mine.Collection}})
		return code == http.StatusOK, nil
	})
	// The id smuggles the victim's namespace: NS/POD/ID once joined.
	code, body := get("collection", url.Values{"namespace": {ns}, "pod": {victim}, "id": {"web/" + theirs.Collection}})
	if code != http.StatusBadRequest || strings.Contains(body, "secret") {
		t.Fatalf("a smuggled id: %d %s", code, body)
	}
	code, body = get("preview", url.Values{"namespace": {ns}, "pod": {victim}, "id": {"web/" + theirs.Collection}, "file": {"web/var/log/w/a.log"}})
	if code != http.StatusBadRequest || strings.Contains(body, "secret") {
		t.Fatalf("a smuggled id's preview: %d %s", code, body)
	}
	t.Logf("smuggled id refused: %d %s", code, strings.TrimSpace(body))

	// A 60 MiB record planted in a collection directory of ns/web, listed while a collection
	// of 50 MiB runs.
	an := analysis(t)
	planted := strings.Replace(collectionDir(mine), mine.Collection, "20200101T000000Z-00000000", 1)
	mustRun(t, an, "sh", "-c", `mkdir -p "$1" && cp "$2"/manifest.json "$1"/ && head -c 62914560 /dev/zero | tr '\0' a > "$1"/custody.intoto.json`, "sh", planted, collectionDir(mine))
	t.Cleanup(func() {
		_ = executor.Exec(cleanupContext(t), exec.Request{Target: an, Command: []string{"rm", "-rf", planted}, Stdout: io.Discard, Stderr: io.Discard})
	})
	agents, err := client.CoreV1().Pods("podcopy").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=agent"})
	if err != nil {
		t.Fatal(err)
	}
	restarts := func() int32 {
		ps, err := client.CoreV1().Pods("podcopy").List(context.WithoutCancel(t.Context()), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=agent"})
		if err != nil {
			t.Fatal(err)
		}
		var n int32
		for _, p := range ps.Items {
			for _, c := range p.Status.ContainerStatuses {
				n += c.RestartCount
			}
		}
		return n
	}
	before := restarts()
	annotate(t, victim, "web", map[string]string{"podcopy/collect": "/var/log/w/big.bin"})
	for i := 0; i < 3; i++ {
		code, body = get("collections", url.Values{"namespace": {ns}, "pod": {"web"}})
		var rows []struct {
			Collection, Signature, Problem string
		}
		if code != http.StatusOK || json.Unmarshal([]byte(body), &rows) != nil {
			t.Fatalf("collections with a planted record: %d %s", code, body)
		}
		found := false
		for _, r := range rows {
			if r.Collection == "20200101T000000Z-00000000" {
				found = true
				if r.Signature != "FAILED" || !strings.Contains(r.Problem, "refused") {
					t.Fatalf("the planted row: %+v", r)
				}
				t.Logf("planted row: %s", r.Problem)
			}
		}
		if !found {
			t.Fatalf("the planted row is not listed: %s", body)
		}
	}
	st := waitFinal(t, victim, "web", theirs.Request)
	if st.Phase != status.Succeeded {
		t.Fatalf("the collection running beside the console: %+v", st)
	}
	if after := restarts(); after != before || len(agents.Items) == 0 {
		t.Fatalf("agent restarts %d -> %d", before, after)
	}
}

// cleanupContext bounds an exec in a cleanup (t.Context() is done there).
func cleanupContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
