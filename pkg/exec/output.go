package exec

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrOutputTooLong is the error of a write past an Output's bound.
var ErrOutputTooLong = errors.New("output too long")

// Output keeps a command's output in memory, at most Max bytes, and fails any write past
// them: what a container prints is hostile input, bounded before it is read. It has no
// ReadFrom on purpose: io.Copy (which is how client-go's stream copy writes) then goes
// through Write and its bound, where an embedded bytes.Buffer's ReadFrom would take
// everything.
type Output struct {
	// Max is the most bytes kept.
	Max  int
	buf  bytes.Buffer
	over bool
}

// Err is ErrOutputTooLong once more than Max bytes were offered (client-go's stream copy
// logs a writer's error and drops it, so Stream asks here after the exec).
func (o *Output) Err() error {
	if o.over {
		return fmt.Errorf("%w: more than %d bytes", ErrOutputTooLong, o.Max)
	}
	return nil
}

// Write implements io.Writer within the bound.
func (o *Output) Write(p []byte) (int, error) {
	if o.buf.Len()+len(p) > o.Max {
		o.over = true
		return 0, o.Err()
	}
	return o.buf.Write(p)
}

// Bytes is what was written (valid until the next write).
func (o *Output) Bytes() []byte { return o.buf.Bytes() }

// String is what was written.
func (o *Output) String() string { return o.buf.String() }

// Len is how many bytes were written.
func (o *Output) Len() int { return o.buf.Len() }
