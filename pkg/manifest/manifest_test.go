package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestBuilderRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 3, 2000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			b, err := NewBuilder(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for i := range n {
				if err := b.AddFile(File{Path: fmt.Sprintf("/var/log/\"f\"%d", i), Size: int64(i), Mode: "0644", SHA256: "ab"}); err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					if err := b.AddSkipped(Skipped{Path: fmt.Sprintf("/var/log/l%d", i), Type: "symlink", Reason: "links are not followed"}); err != nil {
						t.Fatal(err)
					}
				}
			}
			h := Header{Collection: "c", Request: Request{ID: "id", Paths: []string{"/var/log"}, Mode: "once"}}
			size, r, err := b.Finish(h)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(data)) != size {
				t.Fatalf("size %d, read %d", size, len(data))
			}
			var m Manifest
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
			if len(m.Files) != n || m.Totals.Files != n || m.Totals.Skipped != (n+1)/2 || len(m.Skipped) != (n+1)/2 {
				t.Fatalf("got %d files %d skipped, totals %+v", len(m.Files), len(m.Skipped), m.Totals)
			}
			if n > 1 && m.Files[1].Path != "/var/log/\"f\"1" {
				t.Fatalf("path %q", m.Files[1].Path)
			}
			if m.Collection != "c" || m.Request.ID != "id" {
				t.Fatalf("header %+v", m.Header)
			}
		})
	}
}

// TestSpoolBudgetIsShared (issue 20): the manifests in flight share one spool budget, so a
// dozen collections with huge manifests cannot fill the agent's spool volume (and get the
// agent evicted); a finished manifest gives its share back.
func TestSpoolBudgetIsShared(t *testing.T) {
	t.Parallel()
	budget := &SpoolBudget{Max: 64 << 10}
	var builders []*Builder
	var err error
	for i := 0; err == nil && i < 10; i++ {
		b, nerr := NewBuilder(t.TempDir())
		if nerr != nil {
			t.Fatal(nerr)
		}
		b.Spool = budget
		builders = append(builders, b)
		for j := 0; err == nil && j < 100; j++ {
			err = b.AddSkipped(Skipped{Path: fmt.Sprintf("/x/%d/%d", i, j), Type: "other", Reason: strings.Repeat("r", 100)})
		}
	}
	var full *SpoolFullError
	if !errors.As(err, &full) {
		t.Fatalf("err = %v, want the spool full", err)
	}
	for _, b := range builders {
		_ = b.Close()
	}
	if budget.used.Load() != 0 {
		t.Fatalf("%d bytes still reserved after every builder closed", budget.used.Load())
	}
}
