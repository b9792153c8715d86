// Package manifest builds the integrity manifest of a collection (SPEC §3) without holding
// its file list in memory: entries are spooled to temporary files and streamed out at the end.
package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/podcopy/podcopy/pkg/failure"
)

// Request is the request part of the manifest.
type Request struct {
	ID    string   `json:"id"`
	Paths []string `json:"paths"`
	Mode  string   `json:"mode"`
}

// Source describes where the files came from.
type Source struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	UID       string `json:"uid"`
	Container string `json:"container"`
	// ContainerID is the runtime's id of the container read ("containerd://...").
	ContainerID string `json:"containerID,omitempty"`
	Node        string `json:"node"`
	Image       string `json:"image"`
	ImageID     string `json:"imageID"`
}

// Destination describes where the files were written: the analysis pod, the bucket, or both.
type Destination struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
	Dir       string `json:"dir"`
	// Bucket is the collection's prefix in the bucket, "s3://<bucket>/<ns>/<pod>/<id>/".
	Bucket string `json:"bucket,omitempty"`
	// Retention is the Object Lock every object of the collection carries in the bucket.
	Retention *Retention `json:"retention,omitempty"`
}

// Retention is an Object Lock: mode GOVERNANCE or COMPLIANCE until a date, and/or a legal hold.
type Retention struct {
	Mode        string `json:"mode,omitempty"`
	RetainUntil string `json:"retainUntil,omitempty"`
	LegalHold   bool   `json:"legalHold,omitempty"`
}

// Agent identifies the agent that made the collection.
type Agent struct {
	Version string `json:"version"`
	Node    string `json:"node"`
}

// Header is everything in the manifest except the file lists and totals.
type Header struct {
	Collection     string      `json:"collection"`
	Request        Request     `json:"request"`
	Source         Source      `json:"source"`
	Destination    Destination `json:"destination"`
	Agent          Agent       `json:"agent"`
	StartTime      string      `json:"startTime"`
	CompletionTime string      `json:"completionTime"`
	// RequestedBy is who set the request (podcopy/requested-by, written by admission).
	RequestedBy string `json:"requestedBy,omitempty"`
	// RequestOrigin is "creation" when the request came with the pod's creation (RequestedBy
	// is then whoever created it, a controller for a template), "update" otherwise.
	RequestOrigin string `json:"requestOrigin,omitempty"`
	// Alert is the alert the request answers (set by the alert receiver).
	Alert *Alert `json:"alert,omitempty"`
	// Occasion is what started a deferred request (podcopy/collect-on): "termination" or
	// "restart-N" (the container's restart count).
	Occasion string `json:"occasion,omitempty"`
	// Records are the pod's own records stored with the files (podcopy/include).
	Records []Record `json:"records,omitempty"`
	// Bundles are the bundles the bucket holds the collection's small files in.
	Bundles []Bundle `json:"bundles,omitempty"`
}

// Alert is an alert a collection answers: which alerting system sent it, its rule (Falco
// rule or Alertmanager alertname), its id (Falco uuid or Alertmanager fingerprint), when it
// fired, its priority or severity, and the receiver's profile that matched it.
type Alert struct {
	Source   string `json:"source"`
	Rule     string `json:"rule"`
	ID       string `json:"id,omitempty"`
	Time     string `json:"time,omitempty"`
	Priority string `json:"priority,omitempty"`
	Profile  string `json:"profile,omitempty"`
}

// Record is one of the pod's own records stored in the collection (podcopy/include): its
// name relative to the collection directory (under _pod/), its kind (spec, events, log,
// previous-log), size and SHA-256. Truncated says a log was cut at include.maxLogBytes;
// Error, that it could not be read (no file then).
type Record struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Container string `json:"container,omitempty"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	Error     string `json:"error,omitempty"`
}

// File is one regular file written to the destination.
type File struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	Mode    string `json:"mode"`
	ModTime string `json:"modTime"`
	SHA256  string `json:"sha256"`
	// Bundle is the bundle that holds the file in a bucket (a name relative to the
	// collection, "_bundles/000001.tar"), and Offset where its bytes start in it; absent
	// when the file is an object of its own (and always in an analysis pod).
	Bundle string `json:"bundle,omitempty"`
	Offset int64  `json:"offset,omitempty"`
}

// Bundle is one tar object in a bucket that holds many small files of a collection (each
// listed in Files with its Bundle and Offset).
type Bundle struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	Members int    `json:"members"`
}

// Skipped is one entry that was not written, and why.
type Skipped struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

// Totals sums a collection.
type Totals struct {
	Files   int   `json:"files"`
	Bytes   int64 `json:"bytes"`
	Skipped int   `json:"skipped"`
	// Transfer: how the source's archive travelled (SPEC §3 lists the three above; these are
	// podcopy's additions). ArchiveBytes is the tar stream's size, SourceBytes what the agent
	// received for it (smaller when compressed), Compression the codec ("none" or "gzip"),
	// CompressionRatio ArchiveBytes / SourceBytes.
	Compression      string  `json:"compression,omitempty"`
	ArchiveBytes     int64   `json:"archiveBytes,omitempty"`
	SourceBytes      int64   `json:"sourceBytes,omitempty"`
	CompressionRatio float64 `json:"compressionRatio,omitempty"`
}

// Manifest is the whole document, as read back by tests and tools.
type Manifest struct {
	Header
	Files   []File    `json:"files"`
	Skipped []Skipped `json:"skipped"`
	Totals  Totals    `json:"totals"`
}

// Builder accumulates entries on disk. Close it when done.
type Builder struct {
	files, skipped spool
	totals         Totals
	// Max bounds the manifest's file and skipped lists together, in bytes (0: no bound):
	// AddFile and AddSkipped fail with a *TooLargeError past it.
	Max int64
	// Spool, when set, is shared by every Builder of the process: the bytes all of them
	// spool together stay within it (the agent's spool volume), whatever the concurrency.
	Spool    *SpoolBudget
	reserved int64
}

// SpoolBudget bounds the bytes spooled by all manifests of a process at once.
type SpoolBudget struct {
	Max  int64
	used atomic.Int64
}

// SpoolFullError is a manifest that did not fit in what is left of the process's spool.
type SpoolFullError struct{ Max int64 }

func (e *SpoolFullError) Error() string {
	return fmt.Sprintf("the agent's manifest spool is full (spoolMaxBytes=%d bytes shared by the collections in flight); the collection was stopped, run it again later or narrow its paths", e.Max)
}

// FailureReason implements failure.Reasoned.
func (e *SpoolFullError) FailureReason() string { return failure.ManifestTooLarge }

// reserve takes n bytes of the shared spool.
func (b *Builder) reserve(n int64) error {
	if b.Spool == nil || b.Spool.Max <= 0 {
		return nil
	}
	if b.Spool.used.Add(n) > b.Spool.Max {
		b.Spool.used.Add(-n)
		return &SpoolFullError{Max: b.Spool.Max}
	}
	b.reserved += n
	return nil
}

// TooLargeError is a manifest that would pass Builder.Max.
type TooLargeError struct{ Max int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the manifest would be larger than policy.maxManifestBytes=%d bytes (too many entries, or entries with long names); narrow the paths or raise the limit", e.Max)
}

// FailureReason implements failure.Reasoned.
func (e *TooLargeError) FailureReason() string { return failure.ManifestTooLarge }

// Bounds of what a skipped entry records: names and reasons come from a hostile archive
// (a PAX name may be 1 MiB), so they are cut, marked as cut, and escaped once (by JSON).
const (
	MaxSkippedPath   = 1024
	MaxSkippedReason = 512
)

// Truncate returns s cut to at most max bytes on a UTF-8 boundary, with a note of how many
// bytes were left out; s itself when it fits.
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(+%d bytes)", s[:cut], len(s)-cut)
}

func (b *Builder) check() error {
	if b.Max > 0 && b.files.n+b.skipped.n > b.Max {
		return &TooLargeError{Max: b.Max}
	}
	return b.reserve(b.files.n + b.skipped.n - b.reserved)
}

type spool struct {
	f *os.File
	w *bufio.Writer
	n int64
}

func (s *spool) add(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if s.n > 0 {
		b = append([]byte(",\n  "), b...)
	} else {
		b = append([]byte("\n  "), b...)
	}
	n, err := s.w.Write(b)
	s.n += int64(n)
	return err
}

func (s *spool) reader() (io.Reader, error) {
	if err := s.w.Flush(); err != nil {
		return nil, err
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.LimitReader(s.f, s.n), nil
}

// Files reads back the files added, in order, from the spool (nothing of them is held in
// memory); a read failure is yielded with a zero File, and ends the sequence. Call it once
// nothing more is added; it may be ranged over more than once.
func (b *Builder) Files() iter.Seq2[File, error] {
	return func(yield func(File, error) bool) {
		if err := b.files.w.Flush(); err != nil {
			yield(File{}, err)
			return
		}
		d := json.NewDecoder(io.MultiReader(strings.NewReader("["), io.NewSectionReader(b.files.f, 0, b.files.n), strings.NewReader("]")))
		if _, err := d.Token(); err != nil {
			yield(File{}, err)
			return
		}
		for d.More() {
			var f File
			if err := d.Decode(&f); err != nil {
				yield(File{}, fmt.Errorf("reading back the manifest spool: %w", err))
				return
			}
			if !yield(f, nil) {
				return
			}
		}
	}
}

// NewBuilder spools into dir (os.TempDir() when empty).
func NewBuilder(dir string) (*Builder, error) {
	b := &Builder{}
	for _, s := range []*spool{&b.files, &b.skipped} {
		f, err := os.CreateTemp(dir, "podcopy-manifest-*")
		if err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("manifest spool: %w", err)
		}
		// Unlinked at once: the open handle is all we need, and nothing is left behind on a crash.
		_ = os.Remove(f.Name())
		s.f, s.w = f, bufio.NewWriterSize(f, 16<<10)
	}
	return b, nil
}

// AddFile records a written file.
func (b *Builder) AddFile(f File) error {
	b.totals.Files++
	b.totals.Bytes += f.Size
	if err := b.files.add(f); err != nil {
		return err
	}
	return b.check()
}

// AddSkipped records an entry that was not written; its path and reason are cut to
// MaxSkippedPath and MaxSkippedReason bytes.
func (b *Builder) AddSkipped(s Skipped) error {
	b.totals.Skipped++
	s.Path, s.Reason = Truncate(s.Path, MaxSkippedPath), Truncate(s.Reason, MaxSkippedReason)
	if err := b.skipped.add(s); err != nil {
		return err
	}
	return b.check()
}

// Totals returns the running totals.
func (b *Builder) Totals() Totals { return b.totals }

// SetTransfer records how the source's archive travelled: its codec, its size as a tar
// stream and as received.
func (b *Builder) SetTransfer(compression string, archiveBytes, sourceBytes int64) {
	b.totals.Compression, b.totals.ArchiveBytes, b.totals.SourceBytes = compression, archiveBytes, sourceBytes
	b.totals.CompressionRatio = 0
	if sourceBytes > 0 {
		b.totals.CompressionRatio = math.Round(float64(archiveBytes)/float64(sourceBytes)*100) / 100
	}
}

// Finish returns the complete manifest JSON as a stream of known size. The Builder must not
// be added to afterwards.
func (b *Builder) Finish(h Header) (int64, io.Reader, error) {
	head, err := json.MarshalIndent(h, "", " ")
	if err != nil {
		return 0, nil, err
	}
	head = bytes.TrimSuffix(head, []byte("\n}"))
	tot, err := json.Marshal(b.totals)
	if err != nil {
		return 0, nil, err
	}
	files, err := b.files.reader()
	if err != nil {
		return 0, nil, err
	}
	skipped, err := b.skipped.reader()
	if err != nil {
		return 0, nil, err
	}
	parts := [][]byte{head, []byte(",\n \"files\": ["), []byte("\n ],\n \"skipped\": ["), []byte("\n ],\n \"totals\": "), tot, []byte("\n}\n")}
	size := b.files.n + b.skipped.n
	for _, p := range parts {
		size += int64(len(p))
	}
	r := io.MultiReader(bytes.NewReader(parts[0]), bytes.NewReader(parts[1]), files, bytes.NewReader(parts[2]),
		skipped, bytes.NewReader(parts[3]), bytes.NewReader(parts[4]), bytes.NewReader(parts[5]))
	return size, r, nil
}

// Close releases the spool files (and their share of the spool budget).
func (b *Builder) Close() error {
	if b.Spool != nil && b.reserved > 0 {
		b.Spool.used.Add(-b.reserved)
		b.reserved = 0
	}
	var errs []error
	for _, s := range []*spool{&b.files, &b.skipped} {
		if s.f != nil {
			errs = append(errs, s.f.Close())
		}
	}
	return errors.Join(errs...)
}
