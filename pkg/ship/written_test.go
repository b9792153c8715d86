package ship

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// TestWrittenFilesSpill (issue 35): past memIndexEntries names the index moves to its file
// and answers exactly as the map did: duplicates, a file below a file, a directory over a
// file, hard links' entries; and the heap it keeps alive does not grow with the files.
func TestWrittenFilesSpill(t *testing.T) {
	const files = 100_000 // ~6× memIndexEntries: the file table doubles twice
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	w := newWrittenFiles(t.TempDir())
	defer w.Close()
	mtime := time.Unix(1_800_000_000, 0)
	name := func(i int) string { return fmt.Sprintf("var/log/d%03d/f%06d", i%100, i) }
	for i := range files {
		rel := name(i)
		if why := w.conflict(rel, false); why != "" {
			t.Fatalf("%s: %s", rel, why)
		}
		w.addFile(rel, keyOf(rel), int64(i), 0o644, mtime, bytes.Repeat([]byte{byte(i)}, 32), Placement{Bundle: i / 4096, Offset: int64(i)})
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	if w.file == nil || w.mem != nil {
		t.Fatalf("%d files, still in memory", files)
	}
	if held := int64(heap()) - int64(before); held > 4<<20 {
		t.Fatalf("the index of %d files keeps %d bytes of heap alive", files, held)
	}
	for _, i := range []int{0, 1, memIndexEntries - 1, memIndexEntries, 77_777, files - 1} {
		rel := name(i)
		f, at, ok := w.entry(keyOf(rel), "/link")
		if !ok || f.Size != int64(i) || f.Mode != "0644" || f.SHA256 != fmt.Sprintf("%064x", bytes.Repeat([]byte{byte(i)}, 32)) || at.Offset != int64(i) || at.Bundle != i/4096 ||
			f.ModTime != mtime.UTC().Format(time.RFC3339) {
			t.Fatalf("%s: %+v %+v %v", rel, f, at, ok)
		}
		if why := w.conflict(rel, false); why != "a file of this name was already written in this collection" {
			t.Fatalf("%s named again: %q", rel, why)
		}
		if why := w.conflict(rel+"/below", false); why != "its parent /"+rel+" was written as a file in this collection" {
			t.Fatalf("below %s: %q", rel, why)
		}
	}
	if why := w.conflict("var/log/d007", false); why != "a directory of this name was already written in this collection" {
		t.Fatalf("a file over a directory: %q", why)
	}
	if why := w.conflict("var/log/d007", true); why != "" {
		t.Fatalf("a directory again: %q", why)
	}
	if _, _, ok := w.entry(keyOf("var/log/d007"), "/x"); ok {
		t.Fatal("a directory has a file's entry")
	}
	if _, _, ok := w.entry(keyOf("var/log/nothing"), "/x"); ok {
		t.Fatal("a name never written has an entry")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkWrittenFiles is the index's cost per file, in memory and in its file.
func BenchmarkWrittenFiles(b *testing.B) {
	for _, n := range []int{memIndexEntries / 2, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("var/log/d%03d/f%06d", i/1000, i)
			}
			sum := make([]byte, 32)
			b.ResetTimer()
			for range b.N {
				w := newWrittenFiles(b.TempDir())
				for _, rel := range names {
					k := keyOf(rel)
					if f, dup := w.get(k); dup && !f.dir {
						b.Fatal("dup")
					}
					if w.conflict(rel, false) != "" {
						b.Fatal("conflict")
					}
					w.addFile(rel, k, 1024, 0o644, time.Time{}, sum, Placement{})
				}
				_ = w.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/file")
		})
	}
}
