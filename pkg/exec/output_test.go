package exec

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestOutputBoundsIOCopy: io.Copy into an Output stops at its bound (a bytes.Buffer inside
// a struct would lend it ReadFrom, which io.Copy prefers, and take all of it).
func TestOutputBoundsIOCopy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   int
		ok   bool
	}{{"within", 100, true}, {"at the bound", 1 << 10, true}, {"past it", 64 << 20, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := &Output{Max: 1 << 10}
			// A reader with neither WriteTo nor Len, as a network stream is.
			src := io.LimitReader(onlyReader{bytes.NewReader(make([]byte, tc.in))}, int64(tc.in))
			_, err := io.Copy(o, src)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrOutputTooLong)) {
				t.Fatalf("copying %d bytes: %v", tc.in, err)
			}
			if o.Len() > o.Max {
				t.Fatalf("kept %d bytes past the bound %d", o.Len(), o.Max)
			}
			if tc.ok && (o.Len() != tc.in || o.String() != strings.Repeat("\x00", tc.in) || len(o.Bytes()) != tc.in) {
				t.Fatalf("kept %d bytes, want %d", o.Len(), tc.in)
			}
		})
	}
}

type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
