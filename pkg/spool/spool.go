// Package spool is a pipe whose writer never waits on a slow reader until a bound: what the
// reader has not taken yet waits in memory (8 MiB), then in an unlinked file, up to a cap.
// An exec's stream written into it is read at the source's pace, so a slow consumer never
// holds the stream: client-go and the relays between it and the container lose the tail of a
// stream that is read more slowly than it is written (issue 35, hack/cutprobe). The agent
// spools each source's archive (pkg/ship); the plugin and the console spool what they read
// from the analysis pod (internal/evidence).
package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

const (
	// memory is what waits in memory before the file: 8 MiB keeps a consumer that keeps
	// up off the disk (1 GiB into the bucket: the spool's preads cost the agent 1.1 CPU s
	// with 1 MiB here, 0.3 s with 8 MiB).
	memory = 8 << 20
	// punchEvery is how much read disk the spool frees at once.
	punchEvery = 1 << 20
)

// DefaultMax and DefaultFullWait are the bounds the agent's sources and the readers of the
// analysis pod use unless told otherwise.
const (
	// DefaultMax is the disk one stream may wait in: a whole 100,000-file archive. A writer
	// held on a full spool waits on its exec stream, and the relays lose the end of a
	// stream whose reader is slower than its writer (measured with hack/cutprobe: every run
	// at 10 MB/s lost its last 1–3 MB, none at full speed).
	DefaultMax = 256 << 20
	// DefaultFullWait is how long a writer may wait on a full spool before it fails: under
	// the 61 s read deadline client-go's WebSocket executor puts on a stream it does not
	// read (measured: hack/stallprobe; SPDY held a stream unread for 90 s and more), so a
	// stalled consumer ends a stream with its own reason, never with a cut.
	DefaultFullWait = 45 * time.Second
)

// FullError is a writer that waited on a full spool for the spool's bound: the reader took
// nothing meanwhile.
type FullError struct {
	Max  int64
	Wait time.Duration
}

func (e *FullError) Error() string {
	return fmt.Sprintf("nothing was read for %s while the spool was full (%d bytes): the stream was ended before anything on the way could cut it", e.Wait, e.Max)
}

// spool sits between an exec and what consumes its stream: the exec writes at the source's
// pace and waits only when max bytes are waiting already, so a consumer that is slower for a
// while (a bucket's one PUT per small file, a disk) does not hold the exec's stream, which
// the runtime and the API server's relay cut when it is not read for long. Up to memory
// bytes wait in memory; the rest in an unlinked file in dir. Bytes are read in the order
// they were written.
type spool struct {
	mu      sync.Mutex
	changed *sync.Cond
	dir     string
	max     int64
	// mem[mr:] waits in memory, always older than what waits in the file; its array is
	// allocated once (memory) and reused, so bytes passing through allocate nothing.
	mem    []byte
	mr     int
	file   *os.File
	fw, fr int64 // the file's write and read offsets
	// punched is where the disk of what was read ends: [0, punched) is a hole, so the file
	// takes at most max + punchEvery bytes of disk however long it grows.
	punched int64
	werr    error // the writer's end (io.EOF when it closed without error)
	rerr    error // the reader's end
	meter   Meter
	// full bounds a wait on a full spool (0: none): after it, onFull is told.
	full   time.Duration
	clock  clock.Clock
	onFull func(error)
}

// Meter is told what the spools hold (the agent's podcopy_source_spool_bytes, a
// prometheus.Gauge) and how often a writer waited for a full one
// (podcopy_source_spool_waits_total, a prometheus.Counter). Either may be nil.
type Meter struct {
	Bytes interface{ Add(float64) }
	Waits interface{ Inc() }
}

func (m Meter) held(delta int) {
	if m.Bytes != nil && delta != 0 {
		m.Bytes.Add(float64(delta))
	}
}

// New returns the two ends of a spool of at most max bytes of disk in dir (os.TempDir()
// when empty) after its memory. Its writer waits on a full spool for at most full (by c;
// 0: for as long as it takes), then fails with a *FullError and tells onFull (which must
// not call the spool; may be nil).
func New(dir string, max int64, meter Meter, full time.Duration, c clock.Clock, onFull func(error)) (*Reader, *Writer) {
	if c == nil {
		c = clock.RealClock{}
	}
	s := &spool{dir: dir, max: max, meter: meter, full: full, clock: c, onFull: onFull}
	s.changed = sync.NewCond(&s.mu)
	return &Reader{s}, &Writer{s}
}

// Writer is the source's end.
type Writer struct{ s *spool }

// Write spools p, waiting only while the spool is full.
func (w *Writer) Write(p []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if s.rerr != nil {
			return written, s.rerr
		}
		if s.werr != nil {
			return written, io.ErrClosedPipe
		}
		if s.fw == s.fr && len(s.mem) < memory { // nothing waits in the file: memory first
			if s.mem == nil {
				s.mem = make([]byte, 0, memory)
			}
			n := min(len(p), memory-len(s.mem))
			s.mem = append(s.mem, p[:n]...)
			p, written = p[n:], written+n
			s.meter.held(n)
			s.changed.Broadcast()
			continue
		}
		room := s.max - (s.fw - s.fr)
		if room <= 0 {
			if s.meter.Waits != nil {
				s.meter.Waits.Inc()
			}
			if err := s.waitRoom(); err != nil {
				return written, err
			}
			continue
		}
		if s.file == nil {
			f, err := os.CreateTemp(s.dir, "podcopy-spool-*")
			if err != nil {
				return written, err
			}
			_ = os.Remove(f.Name()) // held open: gone from the directory, freed on close
			s.file = f
		}
		n := int(min(int64(len(p)), room))
		m, err := s.file.WriteAt(p[:n], s.fw)
		s.fw += int64(m)
		p, written = p[m:], written+m
		s.meter.held(m)
		s.changed.Broadcast()
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// waitRoom waits, holding s.mu, until the reader frees room or ends, for at most s.full:
// then the spool fails with a *FullError, which onFull is told.
func (s *spool) waitRoom() error {
	expired := false
	if s.full > 0 {
		t := s.clock.NewTimer(s.full)
		stop := make(chan struct{})
		var timer sync.WaitGroup
		timer.Go(func() {
			select {
			case <-t.C():
				s.mu.Lock()
				defer s.mu.Unlock()
				expired = true
				s.changed.Broadcast()
			case <-stop:
			}
		})
		defer func() {
			t.Stop()
			close(stop)
			s.mu.Unlock() // the timer's goroutine may be waiting for it
			timer.Wait()
			s.mu.Lock()
		}()
	}
	for s.rerr == nil && s.max-(s.fw-s.fr) <= 0 {
		if expired {
			err := &FullError{Max: s.max, Wait: s.full}
			if s.onFull != nil {
				s.onFull(err)
			}
			return err
		}
		s.changed.Wait() // full: the reader frees room
	}
	return nil
}

// CloseWithError ends the source's stream: the reader sees err after what was spooled (io.EOF
// when nil).
func (w *Writer) CloseWithError(err error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.werr == nil {
		s.werr = err
		if err == nil {
			s.werr = io.EOF
		}
	}
	s.changed.Broadcast()
}

// Reader is the consumer's end.
type Reader struct{ s *spool }

// Read returns what was spooled first, waiting while nothing is.
func (r *Reader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.rerr != nil {
			return 0, s.rerr
		}
		if s.mr < len(s.mem) {
			n := copy(p, s.mem[s.mr:])
			s.mr += n
			s.meter.held(-n)
			if s.mr == len(s.mem) { // drained: the array is filled again from its start
				s.mem, s.mr = s.mem[:0], 0
			}
			s.changed.Broadcast()
			return n, nil
		}
		if s.fr < s.fw {
			n, err := s.file.ReadAt(p[:min(int64(len(p)), s.fw-s.fr)], s.fr)
			s.fr += int64(n)
			s.meter.held(-n)
			if s.fr == s.fw {
				s.fr, s.fw, s.punched = 0, 0, 0 // drained: the file starts again from its beginning
				_ = s.file.Truncate(0)
			} else if end := s.fr &^ (punchEvery - 1); end > s.punched {
				if err := punchHole(s.file, s.punched, end-s.punched); err == nil {
					s.punched = end
				}
			}
			s.changed.Broadcast()
			if err != nil && !errors.Is(err, io.EOF) {
				return n, err
			}
			return n, nil
		}
		if s.werr != nil {
			return 0, s.werr
		}
		s.changed.Wait()
	}
}

// CloseWithError ends the reading: the writer's next Write fails with err (io.ErrClosedPipe
// when nil), and the spool's file is closed.
func (r *Reader) CloseWithError(err error) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		err = io.ErrClosedPipe
	}
	if s.rerr == nil {
		s.rerr = err
	}
	s.meter.held(-(len(s.mem) - s.mr + int(s.fw-s.fr)))
	s.mem, s.mr = nil, 0
	if s.file != nil {
		_ = s.file.Close()
		s.file = nil
		s.fr, s.fw = 0, 0
	}
	s.changed.Broadcast()
}
