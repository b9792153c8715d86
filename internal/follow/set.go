package follow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// Globber lists the regular files (not symlinks) a glob matches now.
type Globber interface {
	Glob(ctx context.Context, pattern string) ([]string, error)
}

// GlobSource is a Source that can also expand globs.
type GlobSource interface {
	Source
	Globber
}

// maxMatches bounds the files one glob may follow.
const maxMatches = 1000

// Set follows the files a request names: literal paths, and globs expanded again on every
// tick, so files created later are picked up and files that stop matching are finished and
// dropped.
type Set struct {
	Paths  []string
	Source GlobSource
	Sink   Sink
	UID    string
	// Layout is where followed files and their checkpoints land (layout.Layout.FollowFile
	// of the followed pod and container): the one owner of destination paths.
	Layout func(path string) (dest, state string, err error)
	// Retired is where an earlier pod's (uid) file and checkpoint of a path are set aside
	// (layout.Layout.Retired).
	Retired func(path, uid string) (dest, state string, err error)
	// MaxSegment bounds each shipped segment (see File.MaxSegment).
	MaxSegment int64
	// Budget, when positive, bounds what one Tick ships over all its files together (the
	// namespace's quota left in the destination); 0: no bound. A file whose turn comes
	// with nothing left ships nothing this tick.
	Budget int64
	// Allow, when set, vets each file a glob matches (the agent's path policy).
	Allow func(path string) error

	files map[string]*File
	globs map[string]bool // followed because a glob matched
}

// FileReport is one file's part of a tick.
type FileReport struct {
	Path string
	Report
	Err error
	// Dropped: the file no longer matches its glob; this was its last tick.
	Dropped bool
}

// Tick ships every followed file once. The error is about expanding globs; each file's own
// error is in its report.
func (s *Set) Tick(ctx context.Context, dst exec.Target) ([]FileReport, error) {
	if s.files == nil {
		s.files, s.globs = map[string]*File{}, map[string]bool{}
	}
	current := map[string]bool{}
	var errs []error
	for _, p := range s.Paths {
		if !pathname.IsGlob(p) {
			current[p] = true
			continue
		}
		matches, err := s.Source.Glob(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("expanding %s: %w", p, err))
			for f := range s.globs { // keep what was followed: nothing is known to have gone
				current[f] = true
			}
			continue
		}
		if len(matches) > maxMatches {
			errs = append(errs, fmt.Errorf("%s matches %d files; following the first %d", p, len(matches), maxMatches))
			matches = matches[:maxMatches]
		}
		for _, m := range matches {
			// A match printed by the container is hostile input: "sh" expands ".*" to "." and
			// "..", so a match is used only when canonical and matching p segment by segment.
			if err := pathname.Matches(p, m); err != nil {
				errs = append(errs, fmt.Errorf("match of %s refused: %w", p, err))
				continue
			}
			if s.Allow != nil {
				if err := s.Allow(m); err != nil {
					errs = append(errs, fmt.Errorf("%s (matched by %s): %w", m, p, err))
					continue
				}
			}
			current[m] = true
			if !slices.Contains(s.Paths, m) {
				s.globs[m] = true
			}
		}
	}
	var out []FileReport
	var shipped int64
	for _, p := range sortedKeys(current, s.files) {
		if s.Allow != nil {
			// Checked on every tick, so a reloaded policy stops a follow at once: nothing more
			// is read from a path that became denied.
			if err := s.Allow(p); err != nil {
				delete(s.files, p)
				delete(s.globs, p)
				out = append(out, FileReport{Path: p, Err: fmt.Errorf("not followed: %w", err), Dropped: true})
				continue
			}
		}
		f := s.files[p]
		if f == nil {
			dest, state, err := s.Layout(p)
			if err != nil {
				out = append(out, FileReport{Path: p, Err: err})
				delete(current, p)
				continue
			}
			f = &File{Source: s.Source, Sink: s.Sink, Path: p, UID: s.UID, Dest: dest, State: state, MaxSegment: s.MaxSegment}
			if s.Retired != nil {
				p := p
				f.Retired = func(uid string) (string, string, error) { return s.Retired(p, uid) }
			}
			s.files[p] = f
		}
		f.Source = s.Source // the caller may switch sources between ticks (to the helper)
		f.Budget = 0
		if s.Budget > 0 {
			if f.Budget = s.Budget - shipped; f.Budget <= 0 {
				out = append(out, FileReport{Path: p, Report: Report{DestSize: f.destSize}}) // its turn waits
				continue
			}
		}
		rep, err := f.Tick(ctx, dst)
		shipped += rep.Shipped
		fr := FileReport{Path: p, Report: rep, Err: err}
		if !current[p] && err == nil {
			fr.Dropped = true // finished above: a renamed-away generation was read to its end
			delete(s.files, p)
			delete(s.globs, p)
		}
		out = append(out, fr)
	}
	return out, joinErrors(errs)
}

// joinedErrors is errors.Join on one line ("; "): its message lands in a status message,
// where a newline would be escaped.
type joinedErrors []error

func (j joinedErrors) Error() string {
	msgs := make([]string, len(j))
	for i, e := range j {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.Is and errors.As see every error.
func (j joinedErrors) Unwrap() []error { return j }

func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return joinedErrors(errs)
}

// chainCloser is a Sink that ends a followed file's chain when its follow ends (BucketSink).
type chainCloser interface {
	Close(ctx context.Context, file, why string) error
}

// Close ends the chain of every file followed, where the sink keeps chains: a closing
// record binds each chain's last segment. why says why the follow ended.
func (s *Set) Close(ctx context.Context, why string) error {
	c, ok := s.Sink.(chainCloser)
	if !ok {
		return nil
	}
	var errs []error
	for _, p := range s.Followed() {
		file, _, err := s.Layout(p)
		if err == nil {
			err = c.Close(ctx, file, why)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("closing the chain of %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// Followed returns the files followed now (after the last Tick).
func (s *Set) Followed() []string {
	var out []string
	for p := range s.files {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func sortedKeys(a map[string]bool, b map[string]*File) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if !a[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
