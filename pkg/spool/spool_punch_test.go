//go:build linux

package spool

import (
	"bytes"
	"io"
	"syscall"
	"testing"
)

// TestSpoolDiskBound: a spool whose reader keeps a little behind its writer, so its
// file never drains and keeps growing, still takes at most its bound of disk (plus what is
// freed at once): what was read is a hole; and it reads back what was written.
func TestSpoolDiskBound(t *testing.T) {
	t.Parallel()
	const max = 4 << 20
	r, w := New(t.TempDir(), max, Meter{}, 0, nil, nil)
	defer r.CloseWithError(nil)
	chunk := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1<<20) }
	mem := memory >> 20
	for i := range mem + 2 { // memory full, and two chunks in the file
		if _, err := w.Write(chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 1<<20)
	read := 0
	next := func() {
		t.Helper()
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, chunk(read)) {
			t.Fatalf("chunk %d read back changed", read)
		}
		read++
	}
	for range mem { // what waits in memory is read first
		next()
	}
	for i := mem + 2; i < mem+2+45; i++ {
		next()
		if _, err := w.Write(chunk(i)); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(r.s.file.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if disk := st.Blocks * 512; disk > max+2*punchEvery {
			t.Fatalf("after %d MiB through a spool of %d bytes, its file takes %d bytes of disk (%d long)", i+1, max, disk, st.Size)
		}
	}
	if r.s.fw < 40<<20 {
		t.Fatalf("the file is %d bytes long: the test did not make it grow", r.s.fw)
	}
}
