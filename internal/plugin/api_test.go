package plugin

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/verify"
)

// consoleOptions are options as the web console builds them: the user's clients, the
// agent's destination settings and a key source.
func consoleOptions(t *testing.T, pod *signedPod, keys ...*custody.PublicKey) *evidence.Reader {
	t.Helper()
	analysis := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "analysis-0", Namespace: "podcopy", Labels: map[string]string{"app.kubernetes.io/component": "analysis"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "store"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	o := NewOptions(io.Discard, io.Discard).With(fake.NewClientset(analysis), pod, "ns")
	o.Dir, o.AnalysisNamespace, o.AnalysisSelector = "/collect", "podcopy", "app.kubernetes.io/component=analysis"
	o.KeySource = func(ctx context.Context) (custody.Trust, bool, error) {
		return custody.Trust{Keys: keys}, len(keys) > 0, nil
	}
	return o.evidence()
}

// TestEvidenceAPI: what the web console calls. Inspect says verified, not signed or FAILED
// without hashing files; Download writes one tar stream whose files are the collection's,
// and names a tampered file; Preview reads only files the record names, bounded.
func TestEvidenceAPI(t *testing.T) {
	t.Parallel()
	key, _, err := custody.GenerateKey()
	must(t, err)
	t.Run("verified", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, key)
		o := consoleOptions(t, pod, key.Public())
		in, err := o.Inspect(t.Context(), "p", id)
		must(t, err)
		if in.Signature != verify.Verified || in.SignedBy != key.Public().ID() || in.Custody == nil || in.Manifest == nil || len(in.Files) != 2 {
			t.Fatalf("inspect = %+v", in)
		}
		var out bytes.Buffer
		started := 0
		res, err := o.Download(t.Context(), "p", id, &out, func() { started++ })
		must(t, err)
		if !res.OK() || res.Files != 2 || started != 1 {
			t.Fatalf("download = %+v (started %d)", res, started)
		}
		got := map[string][]byte{}
		tr := tar.NewReader(&out)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			must(t, err)
			b, err := io.ReadAll(tr)
			must(t, err)
			got[h.Name] = b
		}
		for name, want := range pod.files {
			if !bytes.Equal(got[id+"/"+name], want) {
				t.Errorf("%s in the archive: %d bytes, want %d", name, len(got[id+"/"+name]), len(want))
			}
		}
		p, err := o.Preview(t.Context(), "p", id, "app/var/log/dir/b.log")
		must(t, err)
		if !p.Truncated || p.Bytes != evidence.PreviewMax || p.Binary || len(p.Text) != evidence.PreviewMax {
			t.Fatalf("preview of a 70,000-byte file: truncated %v, %d bytes, binary %v", p.Truncated, p.Bytes, p.Binary)
		}
		if _, err := o.Preview(t.Context(), "p", id, "../../etc/passwd"); err == nil || !strings.Contains(err.Error(), "has no file") {
			t.Fatalf("preview of a name the record does not list: %v", err)
		}
		v, err := o.Verify(t.Context(), "p", id)
		must(t, err)
		if !v.OK() || v.Files != 2 {
			t.Fatalf("verify = %+v", v)
		}
	})
	t.Run("tampered file", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, key)
		pod.files["app/var/log/a.log"] = []byte("planted\n")
		o := consoleOptions(t, pod, key.Public())
		in, err := o.Inspect(t.Context(), "p", id)
		must(t, err)
		if in.Signature != verify.Verified { // the record and manifest are intact: only hashing finds it
			t.Fatalf("inspect = %+v", in)
		}
		for verb, run := range map[string]func() (Result, error){
			"download": func() (Result, error) { return o.Download(t.Context(), "p", id, io.Discard, nil) },
			"verify":   func() (Result, error) { return o.Verify(t.Context(), "p", id) },
		} {
			res, err := run()
			must(t, err)
			if res.OK() || len(res.Mismatched) != 1 || !strings.Contains(res.Mismatched[0], "/var/log/a.log") {
				t.Errorf("%s = %+v", verb, res)
			}
		}
	})
	t.Run("manifest rewritten", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, key)
		pod.rewrite(t, "app/var/log/a.log", []byte("planted\n"))
		in, err := consoleOptions(t, pod, key.Public()).Inspect(t.Context(), "p", id)
		must(t, err)
		if in.Signature != verify.Failed || !strings.Contains(in.Problem, "manifest.json") || in.Custody != nil {
			t.Fatalf("inspect = %+v", in)
		}
	})
	t.Run("signed by another key", func(t *testing.T) {
		t.Parallel()
		other, _, err := custody.GenerateKey()
		must(t, err)
		o := consoleOptions(t, newSignedPod(t, other), key.Public())
		in, err := o.Inspect(t.Context(), "p", id)
		must(t, err)
		if in.Signature != verify.Failed || in.Manifest != nil {
			t.Fatalf("inspect = %+v", in)
		}
		if res, err := o.Download(t.Context(), "p", id, io.Discard, func() { t.Error("a byte was written for a collection that failed its signature") }); err != nil || res.OK() {
			t.Fatalf("download = %+v, %v", res, err)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, key)
		delete(pod.files, custody.FileName)
		in, err := consoleOptions(t, pod).Inspect(t.Context(), "p", id)
		must(t, err)
		if in.Signature != verify.Unsigned || in.Manifest == nil {
			t.Fatalf("inspect = %+v", in)
		}
	})
}

// shelf plays an analysis pod holding several collections of pod p (paths relative to
// /collect/ns/p/) and counts the commands run in it.
type shelf struct {
	files map[string][]byte
	mu    sync.Mutex
	runs  map[string]int
}

func (s *shelf) Exec(_ context.Context, req exec.Request) error {
	const root = "/collect/ns/p"
	last := req.Command[len(req.Command)-1]
	rel := strings.TrimPrefix(last, root+"/")
	verb := req.Command[0]
	if slices.Contains(req.Command, "podcopy-read") {
		verb = "read"
	}
	s.mu.Lock()
	s.runs[verb]++
	s.mu.Unlock()
	switch verb {
	case "ls":
		seen := map[string]bool{}
		for name := range s.files {
			dir, _, _ := strings.Cut(name, "/")
			if !seen[dir] {
				seen[dir] = true
				fmt.Fprintln(req.Stdout, dir)
			}
		}
		return nil
	case "read", "cat":
		data, ok := s.files[rel]
		if !ok {
			return &exec.ExitError{Code: 3}
		}
		_, err := req.Stdout.Write(data)
		return err
	}
	return fmt.Errorf("unexpected command %q", req.Command)
}

// TestInspectAll: the console's list reads each collection's record and manifest once,
// newest first, at most max; a tampered one is listed FAILED, and so is a directory whose
// record and manifest are gone (a collection appears under its name only complete: it is
// renamed there from staging); names that are not collections are not listed.
func TestInspectAll(t *testing.T) {
	t.Parallel()
	key, _, err := custody.GenerateKey()
	must(t, err)
	ids := []string{"20261201T100000Z-00000001", "20261202T100000Z-00000002", "20261202T110000Z-00000003"}
	s := &shelf{files: map[string][]byte{}, runs: map[string]int{}}
	for _, cid := range ids {
		for name, data := range signedCollection(t, key, cid) {
			s.files[cid+"/"+name] = data
		}
	}
	// The middle one's file and manifest were rewritten to match each other.
	tampered := ids[1] + "/manifest.json"
	s.files[tampered] = bytes.Replace(s.files[tampered], []byte(`"/var/log/a.log"`), []byte(`"/var/log/z.log"`), 1)
	// Emptied: its record and manifest were removed. Not collections: staging and follow.
	emptied := "20261202T120000Z-00000004"
	s.files[emptied+"/app/var/log/a.log"] = []byte("alpha\n")
	s.files[".staging/x"] = nil
	s.files["follow/app/x"] = nil

	pod := &signedPod{files: map[string][]byte{}}
	o := consoleOptions(t, pod, key.Public())
	o.Exec = s
	listed, err := o.InspectAll(t.Context(), "p", 10)
	must(t, err)
	var got []string
	for _, l := range listed {
		got = append(got, l.Row.Collection+" "+l.Inspection.Signature)
	}
	want := []string{emptied + " " + verify.Failed, ids[2] + " " + verify.Verified, ids[1] + " " + verify.Failed, ids[0] + " " + verify.Verified}
	if !slices.Equal(got, want) {
		t.Fatalf("listed %q, want %q", got, want)
	}
	if !strings.Contains(listed[0].Inspection.Problem, "has no "+custody.FileName) {
		t.Errorf("an emptied collection: %+v", listed[0].Inspection)
	}
	listed = listed[1:]
	if r := listed[0].Row; r.Files != 2 || r.Bytes != 70006 || r.Phase != "Succeeded" || !strings.HasSuffix(r.Where, "/collect/ns/p/"+ids[2]) {
		t.Errorf("row %+v", r)
	}
	if listed[1].Row.Files != 0 || listed[1].Row.Bytes != 0 || !strings.Contains(listed[1].Inspection.Problem, "manifest.json: sha256") {
		t.Errorf("a FAILED collection's manifest was believed: %+v", listed[1])
	}
	// One ls; one record and one manifest read per collection (none for the emptied one's
	// manifest: its missing record already failed it).
	if s.runs["ls"] != 1 || s.runs["read"] != len(ids)+1 || s.runs["cat"] != len(ids) {
		t.Errorf("commands run: %v", s.runs)
	}
	short, err := o.InspectAll(t.Context(), "p", 1)
	must(t, err)
	if len(short) != 1 || short[0].Row.Collection != emptied {
		t.Errorf("max 1: %+v", short)
	}
}
