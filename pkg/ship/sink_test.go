package ship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/podcopy/podcopy/pkg/exec"
)

// memBucket is a Bucket in memory: each object's bytes, and what was asked of it.
type memBucket struct {
	mu      sync.Mutex
	objects map[string][]byte
	copies  []string
	aborted bool
	failAt  string // Create of a key with this suffix fails its writes
}

func (m *memBucket) Create(_ context.Context, key string, size int64) (io.WriteCloser, error) {
	return &memObject{m: m, key: key, size: size}, nil
}

func (m *memBucket) Put(ctx context.Context, key string, data []byte, sum [sha256.Size]byte) error {
	if sha256.Sum256(data) != sum {
		return errors.New("put of " + key + " with a checksum of other bytes")
	}
	w, _ := m.Create(ctx, key, int64(len(data)))
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Close()
}

func (m *memBucket) Copy(_ context.Context, dst, src string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[src]
	if !ok {
		return errors.New("copy of a missing object " + src)
	}
	m.objects[dst] = b
	m.copies = append(m.copies, dst+"<-"+src)
	return nil
}

func (m *memBucket) Wait(context.Context) error { return nil }

func (m *memBucket) Abort(context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.aborted = true
}

func (m *memBucket) Version(key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[key]; ok {
		return "v-" + key
	}
	return ""
}

type memObject struct {
	m    *memBucket
	key  string
	size int64
	buf  bytes.Buffer
}

func (o *memObject) Write(p []byte) (int, error) {
	if o.m.failAt != "" && strings.HasSuffix(o.key, o.m.failAt) {
		return 0, errors.New("the bucket refused " + o.key)
	}
	return o.buf.Write(p)
}

func (o *memObject) Close() error {
	if int64(o.buf.Len()) != o.size {
		return errors.New("short object " + o.key)
	}
	o.m.mu.Lock()
	defer o.m.mu.Unlock()
	if o.m.objects == nil {
		o.m.objects = map[string][]byte{}
	}
	o.m.objects[o.key] = o.buf.Bytes()
	return nil
}

// publishes counts the analysis pod's extractions (podcopy-publish execs).
type publishes struct {
	exec.Executor
	mu sync.Mutex
	n  int
}

func (p *publishes) Exec(ctx context.Context, req exec.Request) error {
	if slices.Contains(req.Command, "podcopy-publish") {
		p.mu.Lock()
		p.n++
		p.mu.Unlock()
	}
	return p.Executor.Exec(ctx, req)
}

// TestRunDestinations: the analysis pod, the bucket, and both (a composition of the two)
// receive the same entries; the bucket alone runs nothing in an analysis pod; a failure of
// either side of both leaves neither a published collection nor open uploads.
func TestRunDestinations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		pod, bucket   bool
		failAt        string
		wantErr       string
		wantPublishes int
	}{
		{name: "pod", pod: true, wantPublishes: 1},
		{name: "bucket", bucket: true},
		{name: "both", pod: true, bucket: true, wantPublishes: 1},
		{name: "both, the bucket fails", pod: true, bucket: true, failAt: "/var/log/b", wantErr: "the bucket refused", wantPublishes: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "gnu")
			a := f.write(t, "var/log/a", random(300<<10))
			f.write(t, "var/log/b", random(5000))
			if err := os.Link(filepath.Join(f.root, "var/log/a"), filepath.Join(f.root, "var/log/c")); err != nil {
				t.Fatal(err)
			}
			pub := &publishes{Executor: f.local}
			f.shipper.Exec = pub
			f.shipper.Bundles = &BundleOptions{} // every file an object (TestBundles packs them)
			j := f.job("/var/log")
			mb := &memBucket{failAt: tt.failAt}
			if tt.bucket {
				j.Bucket = mb
			}
			j.NoPod = !tt.pod
			_, err := f.shipper.Run(t.Context(), j)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if _, serr := os.Stat(f.collected(j)); !os.IsNotExist(serr) {
					t.Errorf("a failed collection was published: %v", serr)
				}
				if !mb.aborted {
					t.Error("the bucket's uploads were not aborted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pub.n != tt.wantPublishes {
				t.Errorf("%d extractions in the analysis pod, want %d", pub.n, tt.wantPublishes)
			}
			key := "ns/src/" + j.Header.Collection + "/app/var/log/a"
			if tt.bucket {
				if got := mb.objects[key]; sha(got) != a {
					t.Errorf("bucket object %s has sha256 %s, want %s", key, sha(got), a)
				}
				if _, ok := mb.objects["ns/src/"+j.Header.Collection+"/manifest.json"]; !ok {
					t.Error("no manifest object in the bucket")
				}
				if len(mb.copies) != 1 {
					t.Errorf("hard link: copies %v, want one", mb.copies)
				}
			}
			_, serr := os.Stat(filepath.Join(f.collected(j), "manifest.json"))
			if tt.pod != (serr == nil) {
				t.Errorf("analysis pod holds a manifest: %v, want %v", serr == nil, tt.pod)
			}
			if tt.pod && tt.bucket {
				disk, err := os.ReadFile(filepath.Join(f.collected(j), "manifest.json"))
				if err != nil || !bytes.Equal(disk, mb.objects["ns/src/"+j.Header.Collection+"/manifest.json"]) {
					t.Errorf("the two destinations hold different manifests (%v)", err)
				}
			}
		})
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
