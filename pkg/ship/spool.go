package ship

import (
	"errors"
	"io"
	"os"
	"sync"
)

// Source spool bounds (Shipper.SourceSpool): what waits in memory, then on disk.
const (
	spoolMemory = 1 << 20
	// DefaultSourceSpool is the disk a collection's source stream may wait in when the
	// destination is slower than the source (Shipper.SourceSpool when zero).
	DefaultSourceSpool = 16 << 20
)

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
	mem     []byte // waiting in memory: always older than what waits in the file
	file    *os.File
	fw, fr  int64 // the file's write and read offsets
	werr    error // the writer's end (io.EOF when it closed without error)
	rerr    error // the reader's end
	meter   SpoolMeter
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
	s := &sourceSpool{dir: dir, max: max, meter: meter}
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
			for s.rerr == nil && s.max-(s.fw-s.fr) <= 0 {
				s.changed.Wait() // full: the reader frees room
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
		if len(s.mem) > 0 {
			n := copy(p, s.mem)
			s.mem = s.mem[n:]
			s.meter.held(-n)
			if len(s.mem) == 0 {
				s.mem = nil // its array goes; the next write starts a small one
			}
			s.changed.Broadcast()
			return n, nil
		}
		if s.fr < s.fw {
			n, err := s.file.ReadAt(p[:min(int64(len(p)), s.fw-s.fr)], s.fr)
			s.fr += int64(n)
			s.meter.held(-n)
			if s.fr == s.fw {
				s.fr, s.fw = 0, 0 // drained: the file starts again from its beginning
				_ = s.file.Truncate(0)
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
	s.meter.held(-(len(s.mem) + int(s.fw-s.fr)))
	s.mem = nil
	if s.file != nil {
		_ = s.file.Close()
		s.file = nil
		s.fr, s.fw = 0, 0
	}
	s.changed.Broadcast()
}
