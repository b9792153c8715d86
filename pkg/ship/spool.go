package ship

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/podcopy/podcopy/pkg/failure"
)

// Source spool bounds (Shipper.SourceSpool): what waits in memory, then on disk.
const (
	// spoolMemory is what waits in memory before the file: 8 MiB keeps a destination
	// that keeps up off the disk (1 GiB into the bucket: the spool's preads cost the agent
	// 1.1 CPU s with 1 MiB here, 0.3 s with 8 MiB).
	spoolMemory = 8 << 20
	// punchEvery is how much read disk the spool frees at once.
	punchEvery = 1 << 20
	// DefaultSourceSpool is the disk a collection's source stream may wait in when the
	// destination is slower than the source (Shipper.SourceSpool when zero): a whole
	// 100,000-file archive. A source held on a full spool waits on its exec stream, and the
	// relays lose the end of a stream whose reader is slower than its writer (measured with
	// hack/cutprobe: every run at 10 MB/s lost its last 1–3 MB, none at full speed).
	DefaultSourceSpool = 256 << 20
	// DefaultSpoolFullWait is how long a source may wait on a full spool before the
	// collection fails with SpoolFull: under the 61 s read deadline client-go's WebSocket
	// executor puts on a stream it does not read (measured: hack/stallprobe; SPDY held a
	// stream unread for 90 s and more), so a stalled destination ends a collection with its
	// own reason, never with a cut source.
	DefaultSpoolFullWait = 45 * time.Second
)

// SpoolFullError is a source that waited on a full spool for the spool's bound: the
// destination took nothing meanwhile. Transient: the destination may come back.
type SpoolFullError struct {
	Max  int64
	Wait time.Duration
}

func (e *SpoolFullError) Error() string {
	return fmt.Sprintf("the destination took nothing for %s while the source's spool was full (%d bytes): the source's stream was ended before anything on the way could cut it; the collection is retried", e.Wait, e.Max)
}

// FailureReason implements failure.Reasoned.
func (e *SpoolFullError) FailureReason() string { return failure.SpoolFull }

// sourceSpool sits between the source's exec and the processing of its archive: the exec
// writes at the source's pace and waits only when max bytes are waiting already, so a
// destination that is slower for a while (a bucket's one PUT per small file) does not hold
// the source's exec stream, which the runtime and the API server's relay cut when it is not
// read for long. Up to spoolMemory bytes wait in memory; the rest in an unlinked file in
// dir. Bytes are read in the order they were written.
type sourceSpool struct {
	mu      sync.Mutex
	changed *sync.Cond
	dir     string
	max     int64
	// mem[mr:] waits in memory, always older than what waits in the file; its array is
	// allocated once (spoolMemory) and reused, so bytes passing through allocate nothing.
	mem    []byte
	mr     int
	file   *os.File
	fw, fr int64 // the file's write and read offsets
	// punched is where the disk of what was read ends: [0, punched) is a hole, so the file
	// takes at most max + punchEvery bytes of disk however long it grows.
	punched int64
	werr    error // the writer's end (io.EOF when it closed without error)
	rerr    error // the reader's end
	meter   SpoolMeter
	// full bounds a wait on a full spool (0: none): after it, onFull is told.
	full   time.Duration
	clock  clock.Clock
	onFull func(error)
}

// SpoolMeter is told what the source spools hold (podcopy_source_spool_bytes, a
// prometheus.Gauge) and how often a source waited for a full one
// (podcopy_source_spool_waits_total, a prometheus.Counter). Either may be nil.
type SpoolMeter struct {
	Bytes interface{ Add(float64) }
	Waits interface{ Inc() }
}

func (m SpoolMeter) held(delta int) {
	if m.Bytes != nil && delta != 0 {
		m.Bytes.Add(float64(delta))
	}
}

// newSourceSpool returns the two ends of a spool of at most max bytes of disk in dir.
func newSourceSpool(dir string, max int64, meter SpoolMeter) (*spoolReader, *spoolWriter) {
	return newBoundedSpool(dir, max, meter, 0, nil, nil)
}

// newBoundedSpool is newSourceSpool whose writer waits on a full spool for at most full (by
// c), then fails and tells onFull (which must not call the spool).
func newBoundedSpool(dir string, max int64, meter SpoolMeter, full time.Duration, c clock.Clock, onFull func(error)) (*spoolReader, *spoolWriter) {
	s := &sourceSpool{dir: dir, max: max, meter: meter, full: full, clock: c, onFull: onFull}
	s.changed = sync.NewCond(&s.mu)
	return &spoolReader{s}, &spoolWriter{s}
}

// spoolWriter is the source's end.
type spoolWriter struct{ s *sourceSpool }

// Write spools p, waiting only while the spool is full.
func (w *spoolWriter) Write(p []byte) (int, error) {
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
		if s.fw == s.fr && len(s.mem) < spoolMemory { // nothing waits in the file: memory first
			if s.mem == nil {
				s.mem = make([]byte, 0, spoolMemory)
			}
			n := min(len(p), spoolMemory-len(s.mem))
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
			f, err := os.CreateTemp(s.dir, "podcopy-source-*")
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
// then the spool fails with a SpoolFullError, which onFull is told.
func (s *sourceSpool) waitRoom() error {
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
			err := &SpoolFullError{Max: s.max, Wait: s.full}
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
func (w *spoolWriter) CloseWithError(err error) {
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

// spoolReader is the processing's end.
type spoolReader struct{ s *sourceSpool }

// Read returns what was spooled first, waiting while nothing is.
func (r *spoolReader) Read(p []byte) (int, error) {
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
func (r *spoolReader) CloseWithError(err error) {
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
