package verify

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podcopy/podcopy/internal/testkit/golden"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/manifest"
)

const id = "20261206T101500Z-1a2b3c4d"

func hexsum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// evidence is one collection: its files, manifest and record as the agent writes them.
type evidence struct {
	files    map[string][]byte // name relative to the collection -> bytes
	manifest []byte
	record   []byte
}

// genuine is collection cid of ns/pod (uid) signed by key, with versions (name -> version
// id) recorded for the bucket.
func genuine(t *testing.T, key *custody.PrivateKey, ns, pod, uid, cid string, versions map[string]string) evidence {
	t.Helper()
	e := evidence{files: map[string][]byte{"app/var/log/a.log": []byte("alpha\n"), "app/var/log/b.log": []byte("beta\n")}}
	h := manifest.Header{Collection: cid, Source: manifest.Source{Namespace: ns, Pod: pod, UID: uid, Container: "app", Node: "node1"}}
	m := manifest.Manifest{Header: h}
	var subjects []custody.Subject
	for _, p := range []string{"/var/log/a.log", "/var/log/b.log"} {
		data := e.files["app"+p]
		m.Files = append(m.Files, manifest.File{Path: p, Size: int64(len(data)), SHA256: hexsum(data)})
		subjects = append(subjects, custody.Subject{Name: "app" + p, SHA256: hexsum(data), VersionID: versions["app"+p]})
	}
	var err error
	if e.manifest, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	subjects = append(subjects, custody.Subject{Name: custody.ManifestSubject, SHA256: hexsum(e.manifest), VersionID: versions[custody.ManifestSubject]})
	if e.record, err = custody.Seal(t.Context(), key, subjects, custody.PredicateFor(h, manifest.Totals{Files: 2}, "tar")); err != nil {
		t.Fatal(err)
	}
	return e
}

// archive is the collection as the analysis pod's tar prints it.
func (e evidence) archive(t *testing.T, extra map[string][]byte) *tar.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	all := map[string][]byte{custody.ManifestSubject: e.manifest, custody.FileName: e.record}
	for k, v := range e.files {
		all[k] = v
	}
	for k, v := range extra {
		all[k] = v
	}
	for name, data := range all {
		if data == nil {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + name, Size: int64(len(data)), Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return tar.NewReader(&buf)
}

func newKey(t *testing.T) *custody.PrivateKey {
	t.Helper()
	k, _, err := custody.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestVerifier is the table every reader shares: each binding and each file verdict, through
// a tar stream (fetch, download, verify in place).
func TestVerifier(t *testing.T) {
	t.Parallel()
	key, other := newKey(t), newKey(t)
	want := Identity{Namespace: "ns", Pod: "web", Collection: id, UID: "uid-1"}
	good := genuine(t, key, "ns", "web", "uid-1", id, nil)
	keys := Keys{Trust: custody.Trust{Keys: []*custody.PublicKey{key.Public()}}, Required: true}
	for _, tc := range []struct {
		name   string
		keys   Keys
		want   Identity
		ev     func() evidence
		extra  map[string][]byte
		state  string
		expect []string // substrings of the verdict's error ("" list: OK)
	}{
		{name: "genuine", keys: keys, want: want, ev: func() evidence { return good }, state: Verified},
		{name: "another collection of the same pod", keys: keys, want: want, state: Failed,
			ev:     func() evidence { return genuine(t, key, "ns", "web", "uid-1", "20261101T000000Z-00000001", nil) },
			expect: []string{`BINDING  the record is of collection "20261101T000000Z-00000001", not "` + id + `"`}},
		{name: "another pod's collection", keys: keys, want: want, state: Failed,
			ev:     func() evidence { return genuine(t, key, "ns", "db", "uid-2", id, nil) },
			expect: []string{"BINDING  the record is of pod ns/db, not ns/web", "the record is of pod uid uid-2, not uid-1"}},
		{name: "another pod of the same name", keys: keys, want: want, state: Failed,
			ev:     func() evidence { return genuine(t, key, "ns", "web", "uid-0", id, nil) },
			expect: []string{"the record is of pod uid uid-0, not uid-1 (another pod of the same name)"}},
		{name: "uid not known", keys: keys, want: Identity{Namespace: "ns", Pod: "web", Collection: id}, state: Verified,
			ev: func() evidence { return genuine(t, key, "ns", "web", "uid-0", id, nil) }},
		{name: "record removed", keys: keys, want: want, state: Failed,
			ev:     func() evidence { e := good; e.record = nil; return e },
			expect: []string{"has no custody.intoto.json, but custody keys are published"}},
		{name: "signed by another key", keys: keys, want: want, state: Failed,
			ev:     func() evidence { return genuine(t, other, "ns", "web", "uid-1", id, nil) },
			expect: []string{"does not verify with any of the 1 public keys"}},
		{name: "unsigned cluster", keys: Keys{}, want: want, state: Unsigned,
			ev: func() evidence { e := good; e.record = nil; return e }},
		{name: "unsigned, another pod's manifest", keys: Keys{}, want: want, state: Failed,
			ev:     func() evidence { e := genuine(t, key, "ns", "db", "uid-1", id, nil); e.record = nil; return e },
			expect: []string{"manifest.json is of pod ns/db, not ns/web"}},
		{name: "manifest rewritten", keys: keys, want: want, state: Verified,
			ev: func() evidence {
				e := good
				e.manifest = bytes.Replace(e.manifest, []byte(`"size":6`), []byte(`"size":7`), 1)
				return e
			},
			expect: []string{"MISMATCH manifest.json: sha256 ", "but the custody record signed"}},
		{name: "status pin differs, signed", keys: keys, want: Identity{Namespace: "ns", Pod: "web", Collection: id, ManifestSHA256: strings.Repeat("0", 64)}, state: Verified,
			ev:     func() evidence { return good },
			expect: []string{"MISMATCH manifest.json: sha256 " + hexsum(good.manifest) + ", but the agent recorded 0000"}},
		{name: "status pin differs, unsigned", keys: Keys{}, want: Identity{Namespace: "ns", Pod: "web", Collection: id, ManifestSHA256: strings.Repeat("0", 64)}, state: Failed,
			ev:     func() evidence { e := good; e.record = nil; return e },
			expect: []string{"BINDING  manifest.json: sha256 "}},
		{name: "a file changed", keys: keys, want: want, state: Verified,
			ev: func() evidence {
				e := good
				e.files = map[string][]byte{"app/var/log/a.log": []byte("ALPHA\n"), "app/var/log/b.log": good.files["app/var/log/b.log"]}
				return e
			},
			expect: []string{"MISMATCH /var/log/a.log: sha256 " + hexsum([]byte("ALPHA\n")) + ", signed record " + hexsum([]byte("alpha\n"))}},
		{name: "a file missing", keys: keys, want: want, state: Verified,
			ev: func() evidence {
				e := good
				e.files = map[string][]byte{"app/var/log/b.log": good.files["app/var/log/b.log"]}
				return e
			},
			expect: []string{"MISSING  /var/log/a.log"}},
		{name: "a file planted", keys: keys, want: want, state: Verified, ev: func() evidence { return good },
			extra: map[string][]byte{"app/var/log/planted.log": []byte("x")}, expect: []string{"EXTRA    app/var/log/planted.log (not in the signed record)"}},
		{name: "a name climbing out", keys: keys, want: want, state: Verified, ev: func() evidence { return good },
			extra: map[string][]byte{"../../escape": []byte("x")}, expect: []string{"EXTRA    ./../../escape (not a clean name)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := tc.ev()
			c := Open(t.Context(), tc.keys, tc.want, "collection", e.record)
			if !c.Failed() {
				c.Manifest(e.manifest)
				if err := c.Tar(e.archive(t, tc.extra), NewDiscard()); err != nil {
					t.Fatal(err)
				}
			}
			v := c.Finish()
			if v.Signature != tc.state {
				t.Errorf("signature %q, want %q (%+v)", v.Signature, tc.state, v)
			}
			err := v.Err()
			if len(tc.expect) == 0 {
				if err != nil || v.Files != 2 {
					t.Fatalf("want OK with 2 files: %v (%+v)", err, v)
				}
				return
			}
			if err == nil {
				t.Fatalf("want a failure naming %q: %+v", tc.expect, v)
			}
			for _, s := range tc.expect {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q not in\n%s", s, err)
				}
			}
		})
	}
}

// TestDir: a fetched directory, offline: planted files and changed files are named; the
// namespace and pod are checked only when named.
func TestDir(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	e := genuine(t, key, "ns", "web", "uid-1", id, nil)
	dir := t.TempDir()
	for name, data := range map[string][]byte{"app/var/log/a.log": []byte("changed"), "app/var/log/b.log": e.files["app/var/log/b.log"], "app/extra": []byte("x")} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	keys := Keys{Trust: custody.Trust{Keys: []*custody.PublicKey{key.Public()}}, Required: true}
	c := Open(t.Context(), keys, Identity{Collection: id}, dir, e.record)
	c.Manifest(e.manifest)
	if err := c.Dir(root); err != nil {
		t.Fatal(err)
	}
	v := c.Finish()
	if v.Record == nil || v.Record.Namespace != "ns" || v.Record.Pod != "web" || v.Record.UID != "uid-1" {
		t.Fatalf("the record's identity is not in the verdict: %+v", v.Record)
	}
	if len(v.Mismatched) != 1 || !strings.HasPrefix(v.Mismatched[0], "/var/log/a.log") || len(v.Unexpected) != 1 || !strings.HasPrefix(v.Unexpected[0], "app/extra") {
		t.Fatalf("verdict %+v", v)
	}
	if c := Open(t.Context(), keys, Identity{Namespace: "ns", Pod: "db", Collection: id}, dir, e.record); !c.Failed() {
		t.Fatal("--expect ns/db accepted a record of ns/web")
	}
}

// TestBucket: objects read at the versions the record names; newer versions, delete
// markers and removed versions are tampering, named.
func TestBucket(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	versions := map[string]string{"app/var/log/a.log": "va1", "app/var/log/b.log": "vb1", custody.ManifestSubject: "vm1"}
	e := genuine(t, key, "ns", "web", "uid-1", id, versions)
	store := map[string][]byte{"app/var/log/a.log@va1": e.files["app/var/log/a.log"], "app/var/log/b.log@vb1": e.files["app/var/log/b.log"],
		"app/var/log/a.log@va2": []byte("replayed"), custody.ManifestSubject + "@vm1": e.manifest}
	open := func(_ context.Context, name, version string) (io.ReadCloser, error) {
		b, ok := store[name+"@"+version]
		if !ok {
			return nil, fmt.Errorf("no %s@%s", name, version)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	base := []Version{
		{Name: custody.FileName, VersionID: "vr1", Latest: true},
		{Name: custody.ManifestSubject, VersionID: "vm1", Latest: true},
		{Name: "app/var/log/b.log", VersionID: "vb1", Latest: true},
	}
	keys := Keys{Trust: custody.Trust{Keys: []*custody.PublicKey{key.Public()}}, Required: true}
	for _, tc := range []struct {
		name     string
		versions []Version
		expect   []string
	}{
		{name: "as written", versions: append(base, Version{Name: "app/var/log/a.log", VersionID: "va1", Latest: true})},
		{name: "a newer version over it", versions: append(base, Version{Name: "app/var/log/a.log", VersionID: "va1"}, Version{Name: "app/var/log/a.log", VersionID: "va2", Latest: true}),
			expect: []string{"TAMPERED /var/log/a.log: version va2 written over the recorded version va1"}},
		{name: "a delete marker over it", versions: append(base, Version{Name: "app/var/log/a.log", VersionID: "va1"}, Version{Name: "app/var/log/a.log", VersionID: "dm", Latest: true, DeleteMarker: true}),
			expect: []string{"TAMPERED /var/log/a.log: a delete marker over the recorded version va1"}},
		{name: "its version removed", versions: append(base, Version{Name: "app/var/log/a.log", VersionID: "va2", Latest: true}),
			expect: []string{"TAMPERED /var/log/a.log: the recorded version va1 is gone"}},
		{name: "a record written twice", versions: append(base, Version{Name: "app/var/log/a.log", VersionID: "va1", Latest: true}, Version{Name: custody.FileName, VersionID: "vr0"}),
			expect: []string{"TAMPERED custody.intoto.json has 2 versions"}},
		{name: "an object planted", versions: append(base, Version{Name: "app/var/log/a.log", VersionID: "va1", Latest: true}, Version{Name: "app/x", VersionID: "vx", Latest: true}),
			expect: []string{"EXTRA    app/x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Open(t.Context(), keys, Identity{Namespace: "ns", Pod: "web", Collection: id}, "s3://b/ns/web/"+id+"/", e.record)
			if got := c.Version(custody.ManifestSubject); got != "vm1" {
				t.Fatalf("the manifest's recorded version is %q", got)
			}
			c.Manifest(e.manifest)
			if err := c.Bucket(t.Context(), tc.versions, open, NewDiscard()); err != nil {
				t.Fatal(err)
			}
			err := c.Finish().Err()
			if len(tc.expect) == 0 && err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.expect {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("%q not in %v", s, err)
				}
			}
		})
	}
}

// TestVerdictJSON: the verdict's JSON (verify --json, the console's verify route) is a
// contract file.
func TestVerdictJSON(t *testing.T) {
	t.Parallel()
	v := Verdict{Collection: id, Dir: "podcopy/analysis-0/store:/collect/ns/web/" + id, Signature: Failed, SignedBy: "4bb1",
		Record:   &Bound{Namespace: "ns", Pod: "web", UID: "uid-0", Collection: "20261101T000000Z-00000001", Node: "node1", Container: "app", EndTime: "2026-11-01T00:00:05Z"},
		Problems: []string{`the record is of collection "20261101T000000Z-00000001", not "` + id + `": a genuine record of another collection, copied over this one`},
		Files:    1, Bytes: 6,
		Mismatched: []string{"/var/log/b.log: sha256 00, signed record 11"}, Missing: []string{"/var/log/c.log"},
		Unexpected: []string{"app/x (not in the signed record)"}, Tampered: []string{"/var/log/a.log: a delete marker over the recorded version va1"}}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/verdict.json", append(b, '\n'))
}
