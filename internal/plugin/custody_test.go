package plugin

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
)

// signedPod plays an analysis pod holding one signed collection: its files by name
// relative to the collection directory (manifest.json and the record among them).
type signedPod struct{ files map[string][]byte }

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// newSignedPod writes the collection as the agent would: files, manifest, record signed by key.
func newSignedPod(t *testing.T, key *custody.PrivateKey) *signedPod {
	t.Helper()
	return &signedPod{files: signedCollection(t, key, id)}
}

// signedCollection is collection cid's files, by name relative to its directory: two
// files, the manifest and the custody record signed with key.
func signedCollection(t *testing.T, key *custody.PrivateKey, cid string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		"app/var/log/a.log":     []byte("alpha\n"),
		"app/var/log/dir/b.log": bytes.Repeat([]byte("b"), 70000),
	}
	m := manifest.Manifest{Header: manifest.Header{Collection: cid, Source: manifest.Source{Namespace: "ns", Pod: "p", Container: "app"}}}
	var subjects []custody.Subject
	for _, f := range []string{"/var/log/a.log", "/var/log/dir/b.log"} {
		data := files["app"+f]
		m.Files = append(m.Files, manifest.File{Path: f, Size: int64(len(data)), SHA256: sum(data)})
		m.Totals.Files++
		m.Totals.Bytes += int64(len(data))
		subjects = append(subjects, custody.Subject{Name: "app" + f, SHA256: sum(data)})
	}
	body, err := json.Marshal(m)
	must(t, err)
	files["manifest.json"] = body
	subjects = append(subjects, custody.Subject{Name: custody.ManifestSubject, SHA256: sum(body)})
	rec, err := custody.Seal(t.Context(), key, subjects, custody.PredicateFor(m.Header, m.Totals, "tar"))
	must(t, err)
	files[custody.FileName] = rec
	return files
}

// rewrite changes a file and rewrites the manifest to match it, as someone with exec in
// the analysis pod could; the signed record is left as it is.
func (p *signedPod) rewrite(t *testing.T, name string, data []byte) {
	t.Helper()
	p.files[name] = data
	var m manifest.Manifest
	must(t, json.Unmarshal(p.files["manifest.json"], &m))
	for i, f := range m.Files {
		if "app"+f.Path == name {
			m.Files[i].SHA256, m.Files[i].Size = sum(data), int64(len(data))
		}
	}
	body, err := json.Marshal(m)
	must(t, err)
	p.files["manifest.json"] = body
}

func (p *signedPod) Exec(_ context.Context, req exec.Request) error {
	rel := func(path string) string { return strings.TrimPrefix(path, ref.Dir+"/") }
	switch {
	case slices.Contains(req.Command, "podcopy-read"):
		data, ok := p.files[rel(req.Command[len(req.Command)-1])]
		if !ok {
			return &exec.ExitError{Code: 3}
		}
		_, err := req.Stdout.Write(data)
		return err
	case req.Command[0] == "head": // head -c N -- PATH
		n, _ := strconv.Atoi(req.Command[2])
		data, ok := p.files[rel(req.Command[len(req.Command)-1])]
		if !ok {
			return &exec.ExitError{Code: 1}
		}
		_, err := req.Stdout.Write(data[:min(n, len(data))])
		return err
	case req.Command[0] == "cat":
		_, err := req.Stdout.Write(p.files[rel(req.Command[len(req.Command)-1])])
		return err
	case req.Command[0] == "sha256sum": // -c -: "SUM  PATH" lines
		failed := false
		sc := bufio.NewScanner(req.Stdin)
		for sc.Scan() {
			want, path, _ := strings.Cut(sc.Text(), "  ")
			data, ok := p.files[rel(path)]
			verdict := "OK"
			switch {
			case !ok:
				verdict, failed = "FAILED open or read", true
			case sum(data) != want:
				verdict, failed = "FAILED", true
			}
			fmt.Fprintf(req.Stdout, "%s: %s\n", path, verdict)
		}
		if failed {
			return &exec.ExitError{Code: 1}
		}
		return nil
	case req.Command[0] == "tar":
		tw := tar.NewWriter(req.Stdout)
		for _, name := range sortedKeys(p.files) {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + name, Size: int64(len(p.files[name])), Mode: 0o644}); err != nil {
				return err
			}
			if _, err := tw.Write(p.files[name]); err != nil {
				return err
			}
		}
		return tw.Close()
	}
	return fmt.Errorf("unexpected command %q", req.Command)
}

func sortedKeys(m map[string][]byte) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// signedOptions are plugin options over pod, with key published in the cluster.
func signedOptions(t *testing.T, pod exec.Executor, out io.Writer, published *custody.PublicKey) *Options {
	t.Helper()
	cs := fake.NewClientset()
	if published != nil {
		must(t, custody.Publish(t.Context(), cs, "podcopy", DefaultSigningKeys, published))
	}
	o := NewOptions(out, io.Discard).With(cs, pod, "ns")
	o.AnalysisNamespace = "podcopy"
	return o
}

// TestSignedCollection (issue 21): fetch and verify check the signature, then every file
// against the signed digests; a file and its manifest rewritten together fail, naming the
// file; an offline verify of the fetched directory passes, and fails once a file is touched.
func TestSignedCollection(t *testing.T) {
	t.Parallel()
	key, _, err := custody.GenerateKey()
	must(t, err)
	other, _, err := custody.GenerateKey()
	must(t, err)
	keyFile := filepath.Join(t.TempDir(), "keys.pem")
	must(t, os.WriteFile(keyFile, append(other.Public().PEM(), key.Public().PEM()...), 0o644))

	t.Run("intact", func(t *testing.T) {
		t.Parallel()
		out, dir := &bytes.Buffer{}, t.TempDir()
		o := signedOptions(t, newSignedPod(t, key), out, key.Public())
		must(t, o.verify(t.Context(), ref))
		must(t, o.fetch(t.Context(), ref, dir))
		if n := strings.Count(out.String(), "every SHA-256 matches the custody record signed by key "+key.Public().ID()); n != 2 {
			t.Fatalf("output %q", out.String())
		}
		// Offline: the fetched directory and a key file, no cluster.
		off := NewOptions(out, io.Discard)
		off.KeyFiles = []string{keyFile}
		local := filepath.Join(dir, id)
		if !isLocalCollection(local) {
			t.Fatal("the fetched directory is not recognised as a collection")
		}
		must(t, off.verifyLocal(t.Context(), local))
		must(t, os.WriteFile(filepath.Join(local, "app/var/log/a.log"), []byte("alpha!\n"), 0o644))
		if err := off.verifyLocal(t.Context(), local); err == nil || !strings.Contains(err.Error(), "MISMATCH /var/log/a.log") {
			t.Fatalf("offline verify of a touched file: %v", err)
		}
		must(t, os.WriteFile(filepath.Join(local, "app/extra"), nil, 0o644))
		if err := off.verifyLocal(t.Context(), local); err == nil || !strings.Contains(err.Error(), "EXTRA    app/extra") {
			t.Fatalf("offline verify of an added file: %v", err)
		}
		off.KeyFiles = []string{writeKey(t, other.Public())}
		if err := off.verifyLocal(t.Context(), local); err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Fatalf("offline verify with a key that did not sign: %v", err)
		}
	})
	t.Run("file and manifest rewritten together", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, key)
		pod.rewrite(t, "app/var/log/dir/b.log", []byte("planted"))
		for verb, run := range map[string]func(o *Options) error{
			"verify": func(o *Options) error { return o.verify(t.Context(), ref) },
			"fetch":  func(o *Options) error { return o.fetch(t.Context(), ref, t.TempDir()) },
		} {
			err := run(signedOptions(t, pod, io.Discard, key.Public()))
			if err == nil || !strings.Contains(err.Error(), "MISMATCH /var/log/dir/b.log") || !strings.Contains(err.Error(), "MISMATCH manifest.json") || strings.Contains(err.Error(), "a.log") {
				t.Errorf("%s: %v", verb, err)
			}
		}
	})
	t.Run("record removed", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, key)
		delete(pod.files, custody.FileName)
		err := signedOptions(t, pod, io.Discard, key.Public()).verify(t.Context(), ref)
		if err == nil || !strings.Contains(err.Error(), "has no "+custody.FileName) {
			t.Fatalf("verify without the record: %v", err)
		}
	})
	t.Run("record resigned by another key", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, other)
		err := signedOptions(t, pod, io.Discard, key.Public()).fetch(t.Context(), ref, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Fatalf("fetch of a record signed by an unpublished key: %v", err)
		}
	})
	t.Run("unsigned cluster", func(t *testing.T) {
		t.Parallel()
		pod := newSignedPod(t, key)
		delete(pod.files, custody.FileName)
		out := &bytes.Buffer{}
		must(t, signedOptions(t, pod, out, nil).verify(t.Context(), ref))
		if !strings.Contains(out.String(), "unsigned") {
			t.Fatalf("output %q", out.String())
		}
	})
}

func writeKey(t *testing.T, k *custody.PublicKey) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "key.pem")
	must(t, os.WriteFile(f, k.PEM(), 0o644))
	return f
}

func TestParseBucketRef(t *testing.T) {
	t.Parallel()
	for arg, want := range map[string]string{
		"s3://evidence/ns/pod/20261123T101500Z-1a2b3c4d/": "evidence ns/pod/20261123T101500Z-1a2b3c4d/",
		"s3://evidence/ns/pod/20261123T101500Z-1a2b3c4d":  "evidence ns/pod/20261123T101500Z-1a2b3c4d/",
		"s3://evidence/ns/pod":                            "error",
		"s3://evidence/ns/../20261123T101500Z-1a2b3c4d":   "error",
		"s3://evidence//pod/x":                            "error",
		"mysql-0":                                         "not a bucket",
	} {
		ref, ok, err := evidence.ParseBucketRef(arg)
		got := ref.Bucket + " " + ref.Prefix
		switch {
		case !ok:
			got = "not a bucket"
		case err != nil:
			got = "error"
		}
		if got != want {
			t.Errorf("parseBucketRef(%q) = %q, want %q", arg, got, want)
		}
	}
}
