package ship

import (
	"io"
	"sync"
)

// pipeChunks is how many writes a pipe holds: with the destination's 256 KiB writes, at most
// 2 MiB per leg and collection.
const pipeChunks = 8

// pipe is io.Pipe with up to pipeChunks writes in flight: a write returns once its bytes are
// copied, not once they are read, so the source's stream keeps arriving while the analysis
// pod's stream is being sent (io.Pipe makes each leg wait for the other). Memory is bounded
// by pipeChunks times the largest write. Either side may close at any time, from any
// goroutine, concurrently with the other side's calls.
type pipe struct {
	mu     sync.Mutex
	cond   sync.Cond
	chunks [][]byte // written, not yet read; chunks[0] partly read
	werr   error    // the writer closed: what the reader gets after the chunks (nil: io.EOF)
	rerr   error    // the reader closed: what writes get
	wdone  bool
}

func newPipe() (*pipeReader, *pipeWriter) {
	p := &pipe{}
	p.cond.L = &p.mu
	return &pipeReader{p}, &pipeWriter{p}
}

// pipeReader is the read half of a pipe.
type pipeReader struct{ p *pipe }

// pipeWriter is the write half of a pipe.
type pipeWriter struct{ p *pipe }

func (r *pipeReader) Read(b []byte) (int, error) {
	p := r.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.chunks) == 0 && !p.wdone && p.rerr == nil {
		p.cond.Wait()
	}
	switch {
	case p.rerr != nil:
		return 0, io.ErrClosedPipe
	case len(p.chunks) == 0 && p.werr != nil:
		return 0, p.werr
	case len(p.chunks) == 0:
		return 0, io.EOF
	}
	n := copy(b, p.chunks[0])
	if p.chunks[0] = p.chunks[0][n:]; len(p.chunks[0]) == 0 {
		p.chunks[0] = nil
		p.chunks = p.chunks[1:]
		p.cond.Broadcast() // room for a writer
	}
	return n, nil
}

// CloseWithError makes writes fail with err (io.ErrClosedPipe when nil).
func (r *pipeReader) CloseWithError(err error) {
	p := r.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rerr == nil {
		if err == nil {
			err = io.ErrClosedPipe
		}
		p.rerr, p.chunks = err, nil
		p.cond.Broadcast()
	}
}

// Close is CloseWithError(nil).
func (r *pipeReader) Close() error { r.CloseWithError(nil); return nil }

func (w *pipeWriter) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c := make([]byte, len(b))
	copy(c, b)
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.chunks) >= pipeChunks && p.rerr == nil && !p.wdone {
		p.cond.Wait()
	}
	switch {
	case p.rerr != nil:
		return 0, p.rerr
	case p.wdone:
		return 0, io.ErrClosedPipe
	}
	p.chunks = append(p.chunks, c)
	p.cond.Broadcast()
	return len(b), nil
}

// CloseWithError makes the reader, once it has read what was written, get err (io.EOF when
// nil). Only the first close counts.
func (w *pipeWriter) CloseWithError(err error) {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.wdone {
		p.wdone, p.werr = true, err
		p.cond.Broadcast()
	}
}

// Close is CloseWithError(nil).
func (w *pipeWriter) Close() error { w.CloseWithError(nil); return nil }
