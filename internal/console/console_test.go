package console

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/shell"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/request"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const collectionID = "20261202T101500Z-1a2b3c4d"

func hexsum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// analysisPod holds one unsigned collection of ns/web in /collect/ns/web/<id>.
func analysisPod(t *testing.T, files map[string][]byte) exec.Executor {
	t.Helper()
	m := manifest.Manifest{Header: manifest.Header{Collection: collectionID, StartTime: "2026-12-02T10:15:00Z", Source: manifest.Source{Namespace: "ns", Pod: "web", Container: "app"}}}
	m.Files = append(m.Files, manifest.File{Path: "/var/log/app.log", Size: 6, Mode: "0644", SHA256: hexsum([]byte("hello\n"))})
	m.Totals.Files, m.Totals.Bytes = 1, 6
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string][]byte{"manifest.json": body}
	for k, v := range files {
		all[k] = v
	}
	dir := "/collect/ns/web/" + collectionID + "/"
	return exectest.Func(func(ctx context.Context, req exec.Request) error {
		last := req.Command[len(req.Command)-1]
		switch req.Command[0] {
		case "ls":
			_, err := io.WriteString(req.Stdout, collectionID+"\n")
			return err
		case "sh": // the custody record: none
			return &exec.ExitError{Code: 3}
		case "cat", "head":
			data, ok := all[strings.TrimPrefix(last, dir)]
			if !ok {
				return &exec.ExitError{Code: 1}
			}
			_, err := req.Stdout.Write(data)
			return err
		case "tar":
			tw := tar.NewWriter(req.Stdout)
			for _, name := range []string{"manifest.json", "app/var/log/app.log"} {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + name, Size: int64(len(all[name])), Mode: 0o644}); err != nil {
					return err
				}
				if _, err := tw.Write(all[name]); err != nil {
					return err
				}
			}
			return tw.Close()
		}
		return errors.New("unexpected command")
	})
}

// newConsole serves a console whose users are "token-<name>"; mallory may not get pods.
func newConsole(t *testing.T, ex exec.Executor) (*httptest.Server, *fake.Clientset) {
	t.Helper()
	return newConsoleWith(t, ex, nil)
}

// newConsoleWith is newConsole with edit applied to the Console before it serves.
func newConsoleWith(t *testing.T, ex exec.Executor, edit func(*Console)) (*httptest.Server, *fake.Clientset) {
	t.Helper()
	analysis := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "analysis-0", Namespace: "podcopy", Labels: map[string]string{"app": "analysis"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "store"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	cs := fake.NewClientset(analysis, web)
	c := &Console{
		Authenticate: func(r *http.Request) (shell.User, string, int, error) {
			token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			name, ok := strings.CutPrefix(token, "token-")
			if !ok {
				return shell.User{}, "", http.StatusUnauthorized, errors.New("authentication failed")
			}
			return shell.User{Name: name}, token, 0, nil
		},
		OriginAllowed: func(r *http.Request) bool {
			o := r.Header.Get("Origin")
			return o == "" || o == "https://console.example"
		},
		Clients: func(token string) (kubernetes.Interface, exec.Executor, error) {
			if token != "token-mallory" {
				return cs, ex, nil
			}
			denied := fake.NewClientset(analysis, web)
			denied.PrependReactor("*", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("mallory may not"))
			})
			return denied, ex, nil
		},
		Keys:        func(context.Context) (custody.Trust, bool, error) { return custody.Trust{}, false, nil },
		Destination: destination.Config{Namespace: "podcopy", Selector: "app=analysis", Dir: "/collect", Retention: destination.Retention{KeepLast: 3}},
		Log:         logr.Discard(),
	}
	if edit != nil {
		edit(c)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, cs
}

func do(t *testing.T, srv *httptest.Server, method, path, token string, body io.Reader, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestConsole: sign-in and Origin are checked on every route; a user who may not read the
// namespace's pods sees none of its collections; collections list with their signature
// state and retention; a download ticket is single-use and its result is the checked
// stream's; a tampered file is named.
func TestConsole(t *testing.T) {
	t.Parallel()
	q := "?namespace=ns&pod=web&id=" + collectionID
	t.Run("refusals", func(t *testing.T) {
		t.Parallel()
		srv, _ := newConsole(t, analysisPod(t, map[string][]byte{"app/var/log/app.log": []byte("hello\n")}))
		for _, tc := range []struct {
			name, method, path, token string
			hdr                       []string
			code                      int
			want                      string
		}{
			{"no token", "GET", "pods?namespace=ns", "", nil, 401, "authentication failed"},
			{"bad token", "GET", "pods?namespace=ns", "nope", nil, 401, "authentication failed"},
			{"foreign origin", "POST", "verify" + q, "token-alice", []string{"Origin", "https://evil.example"}, 403, "origin not allowed"},
			{"forbidden pods", "GET", "pods?namespace=ns", "token-mallory", nil, 403, "mallory may not"},
			{"forbidden collections", "GET", "collections" + q, "token-mallory", nil, 403, "mallory may not"},
			{"forbidden download", "POST", "downloads" + q, "token-mallory", nil, 403, "mallory may not"},
			{"bad namespace", "GET", "pods?namespace=../x", "token-alice", nil, 400, "invalid namespace"},
			{"unknown preview file", "GET", "preview" + q + "&file=../../../etc/passwd", "token-alice", nil, 502, "has no file"},
			{"no such ticket", "GET", "downloads/abc", "", nil, 404, "no such download"},
		} {
			code, body := do(t, srv, tc.method, Prefix+tc.path, tc.token, nil, tc.hdr...)
			if code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s: %d %s, want %d %q", tc.name, code, body, tc.code, tc.want)
			}
		}
	})
	t.Run("read, start, download", func(t *testing.T) {
		t.Parallel()
		srv, cs := newConsole(t, analysisPod(t, map[string][]byte{"app/var/log/app.log": []byte("hello\n")}))
		code, body := do(t, srv, "GET", Prefix+"collections?namespace=ns&pod=web", "token-alice", nil)
		var cols []CollectionView
		if err := json.Unmarshal(body, &cols); code != 200 || err != nil || len(cols) != 1 {
			t.Fatalf("collections: %d %s", code, body)
		}
		if cols[0].Signature != "not signed" || cols[0].Files != 1 || cols[0].Retention != "analysis pod: the latest 3 of the pod" {
			t.Fatalf("collection %+v", cols[0])
		}
		code, body = do(t, srv, "GET", Prefix+"preview"+q+"&file=app/var/log/app.log", "token-alice", nil)
		if code != 200 || !strings.Contains(string(body), `"text":"hello\n"`) {
			t.Fatalf("preview: %d %s", code, body)
		}
		code, body = do(t, srv, "POST", Prefix+"collect", "token-alice", strings.NewReader(`{"namespace":"ns","pod":"web","paths":["/var/log/app.log"]}`),
			"Origin", "https://console.example", "Content-Type", "application/json")
		if code != 200 || !strings.Contains(string(body), `"request"`) {
			t.Fatalf("collect: %d %s", code, body)
		}
		p, err := cs.CoreV1().Pods("ns").Get(t.Context(), "web", metav1.GetOptions{})
		if err != nil || p.Annotations[request.AnnotationCollect] != "/var/log/app.log" || p.Annotations[request.AnnotationMode] != "once" {
			t.Fatalf("the user's patch: %v %v", p.Annotations, err)
		}
		code, body = do(t, srv, "POST", Prefix+"downloads"+q, "token-alice", nil)
		var ticket struct{ Ticket, URL string }
		if err := json.Unmarshal(body, &ticket); code != 200 || err != nil || ticket.Ticket == "" {
			t.Fatalf("ticket: %d %s", code, body)
		}
		code, archive := do(t, srv, "GET", "/"+ticket.URL, "", nil)
		if code != 200 {
			t.Fatalf("download: %d %s", code, archive)
		}
		tr := tar.NewReader(bytes.NewReader(archive))
		var names []string
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		if strings.Join(names, " ") != collectionID+"/manifest.json "+collectionID+"/app/var/log/app.log" {
			t.Fatalf("archive entries %q", names)
		}
		if code, again := do(t, srv, "GET", "/"+ticket.URL, "", nil); code != 404 {
			t.Fatalf("a used ticket: %d %s", code, again)
		}
		if code, res := do(t, srv, "GET", Prefix+"downloads/"+ticket.Ticket+"/result", "token-bob", nil); code != 404 {
			t.Fatalf("another user's download result: %d %s", code, res)
		}
		code, body = do(t, srv, "GET", Prefix+"downloads/"+ticket.Ticket+"/result", "token-alice", nil)
		if code != 200 || !strings.Contains(string(body), `"state":"done"`) || !strings.Contains(string(body), `"verified":true`) {
			t.Fatalf("download result: %d %s", code, body)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		t.Parallel()
		srv, _ := newConsole(t, analysisPod(t, map[string][]byte{"app/var/log/app.log": []byte("HELLO\n")}))
		_, body := do(t, srv, "POST", Prefix+"downloads"+q, "token-alice", nil)
		var ticket struct{ Ticket, URL string }
		if err := json.Unmarshal(body, &ticket); err != nil {
			t.Fatal(err)
		}
		do(t, srv, "GET", "/"+ticket.URL, "", nil)
		_, body = do(t, srv, "GET", Prefix+"downloads/"+ticket.Ticket+"/result", "token-alice", nil)
		if !strings.Contains(string(body), `"verified":false`) || !strings.Contains(string(body), "/var/log/app.log: sha256") {
			t.Fatalf("result of a tampered download: %s", body)
		}
	})
}

// TestTicketsExpire: an unused ticket is gone after a minute (fake clock).
func TestTicketsExpire(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	c := &Console{Now: func() time.Time { return now }, downloads: map[string]*download{
		"old":  {state: "pending", created: now.Add(-2 * ticketTTL)},
		"new":  {state: "pending", created: now},
		"done": {state: "done", ended: now.Add(-2 * resultTTL)},
	}}
	c.prune()
	if _, ok := c.downloads["new"]; !ok || len(c.downloads) != 1 {
		t.Fatalf("after prune: %v", c.downloads)
	}
}

// TestCollectionIDIsOne (issue 33): an id that is not exactly one collection id is refused
// before anything is read: "web/<id>" would otherwise name another namespace's collection
// once joined as NS/POD/ID.
func TestCollectionIDIsOne(t *testing.T) {
	t.Parallel()
	read := 0
	srv, _ := newConsole(t, exectest.Func(func(context.Context, exec.Request) error { read++; return errors.New("nothing may be read") }))
	for _, route := range []string{"GET /collection", "GET /preview", "POST /verify", "POST /downloads"} {
		method, path, _ := strings.Cut(route, " ")
		for _, id := range []string{"web/" + collectionID, "../" + collectionID, collectionID + "/x", "x"} {
			code, body := do(t, srv, method, Prefix[:len(Prefix)-1]+path+"?namespace=ns&pod=ns&id="+url.QueryEscape(id)+"&file=app/a", "token-alice", nil)
			if code != http.StatusBadRequest {
				t.Errorf("%s id %q: %d %s", route, id, code, body)
			}
		}
	}
	if read != 0 {
		t.Fatalf("%d commands ran for refused ids", read)
	}
}

// TestBusy: evidence reads beyond Parallel wait for a slot, then are told the console is
// busy (503, Retry-After); the pod list is not limited.
func TestBusy(t *testing.T) {
	t.Parallel()
	release, started := make(chan struct{}), make(chan struct{}, 1)
	ex := exectest.Func(func(ctx context.Context, req exec.Request) error {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return errors.New("released")
	})
	srv, _ := newConsoleWith(t, ex, func(c *Console) { c.Parallel, c.SlotWait = 1, 50*time.Millisecond })
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+Prefix+"collections?namespace=ns&pod=web", nil)
		req.Header.Set("Authorization", "Bearer token-alice")
		if resp, err := srv.Client().Do(req); err == nil {
			_ = resp.Body.Close()
		}
	}()
	<-started
	code, body := do(t, srv, http.MethodGet, Prefix+"collection?namespace=ns&pod=web&id="+collectionID, "token-alice", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "busy") {
		t.Fatalf("a second evidence read while the only slot is held: %d %s", code, body)
	}
	if code, _ := do(t, srv, http.MethodGet, Prefix+"pods?namespace=ns", "token-alice", nil); code != http.StatusOK {
		t.Fatalf("pods while busy: %d", code)
	}
	close(release)
	<-done
}
