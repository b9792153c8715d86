package plugin

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"go.uber.org/goleak"

	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRequestAnnotations(t *testing.T) {
	t.Parallel()
	ann, err := requestAnnotations([]string{"/var/log/a", "/var/log/b"}, collectFlags{follow: true, interval: "10s", container: "app"}, metav1.Now().Time)
	if err != nil {
		t.Fatal(err)
	}
	if val(ann, request.AnnotationCollect) != "/var/log/a,/var/log/b" || val(ann, request.AnnotationMode) != "follow" || val(ann, request.AnnotationInterval) != "10s" ||
		val(ann, request.AnnotationContainer) != "app" || ann[request.AnnotationSource] != nil || val(ann, request.AnnotationTrigger) == "" {
		t.Fatalf("annotations %v", ann)
	}
	if _, ok := ann[request.AnnotationSource]; !ok {
		t.Fatal("an unset key must be removed (null in the merge patch), not left as it was")
	}
	if _, err := requestAnnotations([]string{"/x"}, collectFlags{interval: "10s"}, metav1.Now().Time); err == nil {
		t.Fatal("--interval without --follow was accepted")
	}
	now := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	ann, err = requestAnnotations([]string{"/x"}, collectFlags{follow: true, forDuration: time.Hour}, now)
	if err != nil || val(ann, request.AnnotationFollowUntil) != "2026-12-02T15:00:00Z" {
		t.Fatalf("--for 1h: %v %v", ann, err)
	}
	if _, err := requestAnnotations([]string{"/x"}, collectFlags{forDuration: time.Hour}, now); err == nil {
		t.Fatal("--for without --follow was accepted")
	}
	ann, err = requestAnnotations([]string{"/x"}, collectFlags{include: "spec,logs", collectOn: "termination"}, now)
	if err != nil || val(ann, request.AnnotationInclude) != "spec,logs" || val(ann, request.AnnotationCollectOn) != "termination" {
		t.Fatalf("--include, --on: %v %v", ann, err)
	}
	if v, ok := ann[request.AnnotationAlert]; !ok || v != nil {
		t.Fatal("the plugin must remove an alert record, never keep or set one")
	}
}

// val is the value a merge patch sets for key ("" when it removes it).
func val(ann map[string]*string, key string) string {
	if v := ann[key]; v != nil {
		return *v
	}
	return ""
}

// analysisFake plays the analysis pod: cat of the manifest, tar of the collection; its
// sha256sum says OK to anything (a compromised analysis pod), which nothing may believe.
type analysisFake struct {
	manifest []byte
	archive  []byte
	record   []byte // the custody record (nil: none)
}

func (a analysisFake) Exec(ctx context.Context, req exec.Request) error {
	switch req.Command[0] {
	case "sh":
		if slices.Contains(req.Command, "podcopy-read") {
			if a.record == nil {
				return &exec.ExitError{Code: 3}
			}
			_, err := req.Stdout.Write(a.record)
			return err
		}
	case "cat":
		_, err := req.Stdout.Write(a.manifest)
		return err
	case "tar":
		_, err := req.Stdout.Write(a.archive)
		return err
	case "sha256sum":
		_, _ = io.Copy(io.Discard, req.Stdin)
		_, err := io.WriteString(req.Stdout, "OK\n")
		return err
	}
	return fmt.Errorf("unexpected command %v", req.Command)
}

const id = "20261123T101500Z-1a2b3c4d"

// collection builds a manifest and the tar stream the analysis pod's tar would print; edit
// changes the archive's entries before they are written.
func collection(t *testing.T, edit func(name string, data []byte) (string, []byte)) analysisFake {
	t.Helper()
	files := map[string]string{"/var/log/a.log": "alpha\n", "/var/log/dir/b.log": strings.Repeat("b", 70000)}
	m := manifest.Manifest{Header: manifest.Header{Collection: id, Source: manifest.Source{Namespace: "ns", Pod: "p", Container: "app"}}}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}))
	for _, p := range []string{"/var/log/a.log", "/var/log/dir/b.log"} {
		data := []byte(files[p])
		sum := sha256.Sum256(data)
		m.Files = append(m.Files, manifest.File{Path: p, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
		name := "./app" + p
		if edit != nil {
			name, data = edit(name, data)
		}
		if name == "" {
			continue
		}
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644}))
		_, err := tw.Write(data)
		must(t, err)
	}
	body, err := json.Marshal(m)
	must(t, err)
	must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./manifest.json", Size: int64(len(body)), Mode: 0o644}))
	_, err = tw.Write(body)
	must(t, err)
	must(t, tw.Close())
	return analysisFake{manifest: body, archive: buf.Bytes()}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var ref = evidence.Ref{Namespace: "ns", Pod: "p", ID: id, Analysis: exec.Target{Namespace: "podcopy", Pod: "analysis-0", Container: "store"}, Dir: "/collect/ns/p/" + id}

func TestFetchVerifiesEveryFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(string, []byte) (string, []byte)
		want string // in the error; "" = success
	}{
		{name: "intact"},
		{name: "a byte changed", edit: func(n string, d []byte) (string, []byte) {
			if strings.HasSuffix(n, "b.log") {
				d = slices.Clone(d)
				d[123] ^= 1
			}
			return n, d
		}, want: "MISMATCH /var/log/dir/b.log"},
		{name: "a file missing", edit: func(n string, d []byte) (string, []byte) {
			if strings.HasSuffix(n, "a.log") {
				return "", nil
			}
			return n, d
		}, want: "MISSING  /var/log/a.log"},
		{name: "a name climbing out", edit: func(n string, d []byte) (string, []byte) {
			if strings.HasSuffix(n, "a.log") {
				return "../../escape", d
			}
			return n, d
		}, want: "EXTRA    ../../escape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, dir := &bytes.Buffer{}, t.TempDir()
			o := NewOptions(out, io.Discard).With(fake.NewClientset(), collection(t, tc.edit), "ns")
			err := o.fetch(t.Context(), ref, dir)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, rerr := os.ReadFile(filepath.Join(dir, id, "app/var/log/dir/b.log"))
				if rerr != nil || len(got) != 70000 || !strings.Contains(out.String(), "every SHA-256 matches") {
					t.Fatalf("fetched %d bytes (%v); output %q", len(got), rerr, out.String())
				}
				if _, err := os.Stat(filepath.Join(dir, id, "manifest.json")); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
				t.Fatal("written outside the output directory")
			}
		})
	}
}

// TestVerifyNamesTheFile: verify hashes the bytes here, so an analysis pod whose sha256sum
// says OK to anything cannot hide a changed file, and a planted one is reported.
func TestVerifyNamesTheFile(t *testing.T) {
	t.Parallel()
	a := collection(t, func(name string, data []byte) (string, []byte) {
		if strings.HasSuffix(name, "b.log") {
			return name, append([]byte("X"), data[1:]...)
		}
		return name, data
	})
	o := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), a, "ns")
	err := o.verify(t.Context(), ref)
	if err == nil || !strings.Contains(err.Error(), "MISMATCH /var/log/dir/b.log") || strings.Contains(err.Error(), "a.log") {
		t.Fatalf("err = %v", err)
	}
	out := &bytes.Buffer{}
	if err := NewOptions(out, io.Discard).With(fake.NewClientset(), collection(t, nil), "ns").verify(t.Context(), ref); err != nil || !strings.Contains(out.String(), "verified 2 files") {
		t.Fatalf("intact: %v %q", err, out.String())
	}
	planted := collection(t, nil)
	planted.archive = appendEntry(t, planted.archive, "./app/var/log/planted.log", []byte("x"))
	if err := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), planted, "ns").verify(t.Context(), ref); err == nil || !strings.Contains(err.Error(), "EXTRA    app/var/log/planted.log") {
		t.Fatalf("a planted file in place: %v", err)
	}
}

// appendEntry is archive (a tar stream) with one more regular file.
func appendEntry(t *testing.T, archive []byte, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		must(t, tw.WriteHeader(hdr))
		_, err = io.Copy(tw, tr)
		must(t, err)
	}
	must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644}))
	_, err := tw.Write(data)
	must(t, err)
	must(t, tw.Close())
	return buf.Bytes()
}

// TestCollectWaitsForItsOwnRequest: collect sets the annotations, then reports the outcome
// of that request (not an older one), non-zero on Failed with the agent's message.
func TestCollectWaitsForItsOwnRequest(t *testing.T) {
	t.Parallel()
	for _, phase := range []status.Phase{status.Succeeded, status.Failed} {
		t.Run(string(phase), func(t *testing.T) {
			t.Parallel()
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Annotations: map[string]string{
				status.Annotation: `{"request":"older","phase":"Succeeded"}`}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
			cs := fake.NewClientset(pod)
			// The agent: answer the request once it is there.
			agent := exectest.Func(func(context.Context, exec.Request) error { return nil })
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				for ctx.Err() == nil {
					p, err := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
					if err != nil {
						return
					}
					if req, err := request.Parse(p, testPolicy()); err == nil && !strings.Contains(p.Annotations[status.Annotation], req.ID()) {
						b, _ := json.Marshal(status.Status{Request: req.ID(), Phase: phase, Files: 1, Bytes: 6, Message: "the agent's words"})
						p.Annotations[status.Annotation] = string(b)
						_, _ = cs.CoreV1().Pods("ns").Update(ctx, p, metav1.UpdateOptions{})
						return
					}
				}
			}()
			out := &bytes.Buffer{}
			o := NewOptions(out, io.Discard).With(cs, agent, "ns")
			err := o.collect(t.Context(), "p", []string{"/var/log/a.log"}, collectFlags{}, true)
			cancel()
			<-done
			if phase == status.Succeeded && (err != nil || !strings.Contains(out.String(), "Succeeded: the agent's words")) {
				t.Fatalf("err = %v, output %q", err, out.String())
			}
			if phase == status.Failed && (err == nil || !strings.Contains(err.Error(), "the agent's words")) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func testPolicy() policy.Policy { return policy.Policy{AllowPaths: []string{"/**"}} }

// TestStopRemovesTheRequest: stop ends a follow by removing the request annotations (the
// agent then ships what is left and stops); others stay.
func TestStopRemovesTheRequest(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Annotations: map[string]string{
		request.AnnotationCollect: "/var/log/app.log", request.AnnotationMode: "follow", request.AnnotationInterval: "10s",
		status.Annotation: `{"request":"x","phase":"Running"}`, "team": "payments"}}}
	cs := fake.NewClientset(pod)
	out := &bytes.Buffer{}
	o := NewOptions(out, io.Discard).With(cs, nil, "ns")
	cmd := NewCommand(o)
	cmd.SetArgs([]string{"stop", "p"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods("ns").Get(t.Context(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{request.AnnotationCollect, request.AnnotationMode, request.AnnotationInterval} {
		if _, ok := p.Annotations[k]; ok {
			t.Errorf("%s is still set", k)
		}
	}
	if p.Annotations["team"] != "payments" || p.Annotations[status.Annotation] == "" || !strings.Contains(out.String(), "stopped") {
		t.Fatalf("annotations %v, output %q", p.Annotations, out.String())
	}
}

// TestFetchGivesUpOnAStalledStream: an analysis pod that sends nothing more fails the fetch
// with the reason, instead of holding it.
func TestFetchGivesUpOnAStalledStream(t *testing.T) {
	t.Parallel()
	a := collection(t, nil)
	stalled := exectest.Func(func(ctx context.Context, req exec.Request) error {
		if req.Command[0] == "tar" {
			<-ctx.Done() // the stream never moves
			return ctx.Err()
		}
		return a.Exec(ctx, req)
	})
	o := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), stalled, "ns")
	o.Stall = 100 * time.Millisecond
	err := o.fetch(t.Context(), ref, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "nothing arrived for 100ms") {
		t.Fatalf("err = %v", err)
	}
}

// TestFetchDrainsTheStreamAtItsPace: the analysis pod's stream is read at its own pace,
// whatever the sink's: its exec writes all of it (12 MiB, past the spool's memory into its
// file) and ends while the sink has taken nothing yet, and the sink then gets every byte.
// Without the spool the exec would wait on the sink, and an exec stream read more slowly than
// it is written loses its tail on the way (issue 35: hack/cutprobe).
func TestFetchDrainsTheStreamAtItsPace(t *testing.T) {
	t.Parallel()
	a := collection(t, nil)
	ended := make(chan struct{})
	fast := exectest.Func(func(ctx context.Context, req exec.Request) error {
		if req.Command[0] != "tar" {
			return a.Exec(ctx, req)
		}
		defer close(ended)
		if _, err := req.Stdout.Write(a.archive); err != nil {
			return err
		}
		zeros := make([]byte, 32<<10) // more end-of-archive blocks: a tar reader reads past them
		for range 12 << 20 / len(zeros) {
			if _, err := req.Stdout.Write(zeros); err != nil {
				return err
			}
		}
		return nil
	})
	o := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), fast, "ns")
	ev := o.evidence()
	ev.SpoolDir = t.TempDir()
	sink := &waitingSink{Discard: verify.NewDiscard(), ended: ended}
	res, err := ev.Stream(t.Context(), ref, sink)
	if err != nil || sink.waited != nil || res.Files != 2 {
		t.Fatalf("stream: %v; the exec's end: %v; %d files verified", err, sink.waited, res.Files)
	}
	if names, _ := os.ReadDir(ev.SpoolDir); len(names) != 0 {
		t.Fatalf("the spool left %v", names)
	}
}

// waitingSink takes nothing until the analysis pod's exec has ended (or a minute passed).
type waitingSink struct {
	*verify.Discard
	ended  chan struct{}
	once   sync.Once
	waited error
}

func (w *waitingSink) Create(e verify.Entry, r io.Reader) (int64, string, error) {
	w.once.Do(func() {
		select {
		case <-w.ended:
		case <-time.After(time.Minute):
			w.waited = errors.New("the analysis pod's exec waited on the sink")
		}
	})
	return w.Discard.Create(e, r)
}

// TestResolveRefusesAForgedStatus: a status set at the pod's creation by whoever created it
// names a decoy pod, another directory or a collection id that climbs out of -o; resolve
// refuses each, and accepts the status only where the agent could have written.
func TestResolveRefusesAForgedStatus(t *testing.T) {
	t.Parallel()
	analysis := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "analysis-0", Namespace: "podcopy", Labels: map[string]string{"app.kubernetes.io/component": "analysis"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "store"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	decoy := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "decoy", Namespace: "ns"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	good := status.Status{Phase: status.Succeeded, Collection: id, Destination: "podcopy/analysis-0/store:/collect/ns/p/" + id, ManifestSHA256: "abc"}
	for _, tc := range []struct {
		name string
		edit func(*status.Status)
		want string // "" = accepted
	}{
		{name: "the agent's own", edit: func(*status.Status) {}},
		{name: "collection climbing out of -o", edit: func(s *status.Status) { s.Collection = "../escaped" }, want: "refusing the pod's status"},
		{name: "a decoy pod", edit: func(s *status.Status) { s.Destination = "ns/decoy/c:/collect/ns/p/" + id }, want: "--analysis-namespace"},
		{name: "a pod outside the selector", edit: func(s *status.Status) { s.Destination = "podcopy/other/store:/collect/ns/p/" + id }, want: "does not match --analysis-selector"},
		{name: "another directory", edit: func(s *status.Status) { s.Destination = "podcopy/analysis-0/store:/fake" }, want: "is not /collect/ns/p/"},
		{name: "another pod's directory", edit: func(s *status.Status) { s.Destination = "podcopy/analysis-0/store:/collect/ns/victim/" + id }, want: "is not /collect/ns/p/"},
		{name: "no such container", edit: func(s *status.Status) { s.Destination = "podcopy/analysis-0/evil:/collect/ns/p/" + id }, want: "no container"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := good
			tc.edit(&st)
			raw, err := json.Marshal(st)
			must(t, err)
			src := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Annotations: map[string]string{status.Annotation: string(raw)}}}
			o := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(src, analysis, decoy), collection(t, nil), "ns")
			o.Dir, o.AnalysisNamespace, o.AnalysisSelector = "/collect", "podcopy", "app.kubernetes.io/component=analysis"
			got, err := o.evidence().ResolveArg(t.Context(), "p")
			if tc.want == "" {
				if err != nil || got.Analysis.Pod != "analysis-0" || got.Dir != "/collect/ns/p/"+id || got.ManifestSHA256 != "abc" {
					t.Fatalf("resolve = %+v, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestManifestPinnedByTheStatus: a file rewritten together with its manifest passes the
// per-file hashes, but not the manifest's hash the agent recorded in the status.
func TestManifestPinnedByTheStatus(t *testing.T) {
	t.Parallel()
	a := collection(t, nil)
	sum := sha256.Sum256(a.manifest)
	pinned := ref
	pinned.ManifestSHA256 = hex.EncodeToString(sum[:])
	if err := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), a, "ns").verify(t.Context(), pinned); err != nil {
		t.Fatalf("the agent's own manifest: %v", err)
	}
	if err := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), a, "ns").fetch(t.Context(), pinned, t.TempDir()); err != nil {
		t.Fatalf("fetch of the agent's own manifest: %v", err)
	}
	tampered := collection(t, func(n string, d []byte) (string, []byte) {
		if strings.HasSuffix(n, "a.log") {
			return n, []byte("rewritten\n")
		}
		return n, d
	})
	// The tamperer rewrote the manifest too: its hashes now match the rewritten file.
	var m manifest.Manifest
	must(t, json.Unmarshal(tampered.manifest, &m))
	s := sha256.Sum256([]byte("rewritten\n"))
	m.Files[0].SHA256, m.Files[0].Size = hex.EncodeToString(s[:]), 10
	body, err := json.Marshal(m)
	must(t, err)
	tampered.manifest = body
	for name, run := range map[string]func(*Options) error{
		"verify": func(o *Options) error { return o.verify(t.Context(), pinned) },
		"fetch":  func(o *Options) error { return o.fetch(t.Context(), pinned, t.TempDir()) },
	} {
		err := run(NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), tampered, "ns"))
		if err == nil || !strings.Contains(err.Error(), "in the pod's status when it wrote it") {
			t.Errorf("%s of a rewritten file and manifest: %v", name, err)
		}
	}
}

// TestVerifyANameWithANewline (issue 20): a collected name with a newline is hashed like any
// other (names travel in tar headers, never as lines of a tool's input).
func TestVerifyANameWithANewline(t *testing.T) {
	t.Parallel()
	data := []byte("hidden\n")
	sum := sha256.Sum256(data)
	m := manifest.Manifest{Header: manifest.Header{Collection: id, Source: manifest.Source{Namespace: "ns", Pod: "p", Container: "app"}},
		Files: []manifest.File{{Path: "/var/log/new\nline.log", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}}}
	body, err := json.Marshal(m)
	must(t, err)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{name: "intact", data: data, want: "verified 1 files"},
		{name: "changed", data: []byte("HIDDEN\n"), want: "MISMATCH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := analysisFake{manifest: body, archive: appendEntry(t, emptyArchive(t), "./app/var/log/new\nline.log", tc.data)}
			out := &bytes.Buffer{}
			err := NewOptions(out, io.Discard).With(fake.NewClientset(), a, "ns").verify(t.Context(), ref)
			if got := out.String() + fmt.Sprint(err); !strings.Contains(got, tc.want) {
				t.Fatalf("output %q, err %v; want %q", out.String(), err, tc.want)
			}
		})
	}
}

// emptyArchive is a tar stream of no entries.
func emptyArchive(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	must(t, tar.NewWriter(&buf).Close())
	return buf.Bytes()
}

// endless is what a compromised analysis pod's cat prints: bytes without end (and no
// WriteTo, as a network stream has none).
type endless struct{}

func (endless) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// floodingAnalysis copies endless output into whatever the plugin reads, with io.Copy as
// client-go's stream copy does (which prefers the writer's ReadFrom when it has one).
type floodingAnalysis struct{ analysisFake }

func (f floodingAnalysis) Exec(ctx context.Context, req exec.Request) error {
	if req.Command[0] == "cat" || slices.Contains(req.Command, "podcopy-read") {
		_, err := io.Copy(req.Stdout, endless{})
		return err
	}
	return f.analysisFake.Exec(ctx, req)
}

// TestAnalysisPodOutputIsBounded: what the plugin reads whole from the analysis pod (the
// manifest, the custody record) is bounded: an endless manifest fails the read at the
// bound instead of filling the plugin's (or the console's) memory.
func TestAnalysisPodOutputIsBounded(t *testing.T) {
	t.Parallel()
	o := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(), floodingAnalysis{collection(t, nil)}, "ns")
	_, err := o.evidence().ReadManifestRaw(t.Context(), ref)
	if !errors.Is(err, exec.ErrOutputTooLong) {
		t.Fatalf("an endless manifest.json: %v", err)
	}
	if _, err := o.evidence().ReadRecord(t.Context(), ref); !errors.Is(err, exec.ErrOutputTooLong) {
		t.Fatalf("an endless custody record: %v", err)
	}
}
